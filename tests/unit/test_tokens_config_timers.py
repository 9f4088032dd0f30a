import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from agentcom import timers as timers_module
from agentcom.actors.token_registry import TokenRegistry
from agentcom.clock import now_ms
from agentcom.config import HubConfig, config_from_args
from agentcom.http.auth import TokenCheck
from agentcom.store import TokenInfo, TokenStore, hash_token, open_tasks_db, open_tokens_db
from agentcom.timers import Timers


def known(tokens: Any, token: str) -> TokenInfo | None:
    info: TokenInfo | None = tokens.snapshot().get(timeout=5).get(hash_token(token))
    return info


def test_tokens_are_stored_hashed_and_checked_by_role(tmp_path: Path) -> None:
    tokens = TokenRegistry.start(tmp_path).proxy()
    token = tokens.create("alice", "admin").get(timeout=5)

    assert len(token) == 64
    info = known(tokens, token)
    assert (info.agent_id, info.role) == ("alice", "admin")
    assert known(tokens, "f" * 64) is None
    raw = (tmp_path / "tokens.sqlite3").read_bytes()
    assert token.encode() not in raw


def test_a_token_created_or_revoked_elsewhere_counts_at_once(tmp_path: Path) -> None:
    tokens = TokenRegistry.start(tmp_path).proxy()
    tokens.list_tokens().get(timeout=5)
    cli_side = TokenStore(open_tokens_db(tmp_path))

    token = cli_side.create("bob", "agent", now_ms())
    assert known(tokens, token).agent_id == "bob"

    cli_side.revoke("bob")
    assert known(tokens, token) is None


def test_listing_shows_prefixes_never_whole_tokens(tmp_path: Path) -> None:
    tokens = TokenRegistry.start(tmp_path).proxy()
    token = tokens.create("carol", "agent").get(timeout=5)

    (listed,) = tokens.list_tokens().get(timeout=5)

    assert listed == {"agent_id": "carol", "role": "agent", "token_prefix": token[:8]}
    assert tokens.revoke("carol").get(timeout=5) == 1
    assert tokens.list_tokens().get(timeout=5) == []


def test_unknown_role_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="role"):
        TokenStore(open_tokens_db(tmp_path)).create("x", "root", now_ms())


def test_flags_win_over_env_which_wins_over_defaults() -> None:
    env = {"AGENTCOM_PORT": "5000", "AGENTCOM_STUCK_THRESHOLD_MS": "1234"}

    config = config_from_args(["--stuck-threshold-ms", "99"], env)

    assert config.port == 5000
    assert config.stuck_threshold_ms == 99
    assert config.acceptance_timeout_ms == HubConfig().acceptance_timeout_ms


def test_bad_settings_are_refused_with_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        config_from_args([], {"AGENTCOM_PING_TIMEOUT_MS": "soon"})
    assert "AGENTCOM_PING_TIMEOUT_MS" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        config_from_args(["--sweep-interval-ms", "0"], {})


def test_timers_fire_in_due_order_and_cancelled_ones_do_not() -> None:
    timers = Timers()
    fired: list[str] = []
    done = threading.Event()
    timers.call_later(0.06, lambda: (fired.append("late"), done.set()))
    timers.call_later(0.02, lambda: fired.append("early"))
    timers.call_later(0.04, lambda: fired.append("cancelled")).cancel()

    assert done.wait(timeout=5)
    timers.stop()
    assert fired == ["early", "late"]


class CountingCondition(threading.Condition):
    def __init__(self, lock: Any = None) -> None:
        super().__init__(lock)
        self.notified = 0

    def notify(self, n: int = 1) -> None:
        self.notified += 1
        super().notify(n)


def test_only_a_new_earliest_timer_wakes_the_timer_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(timers_module.threading, "Condition", CountingCondition)
    timers = Timers()
    wakeup = timers._wakeup
    assert isinstance(wakeup, CountingCondition)
    fired = threading.Event()
    try:
        timers.call_later(30, lambda: None)
        assert wakeup.notified == 1  # the thread slept with nothing to wait for
        timers.call_later(40, lambda: None)
        timers.call_later(35, lambda: None)
        assert wakeup.notified == 1  # later than the earliest: no wake-up
        timers.call_later(0.01, fired.set)
        assert wakeup.notified == 2
        assert fired.wait(timeout=5)
    finally:
        timers.stop()


def test_task_commits_do_not_make_token_checks_reload_the_tokens(tmp_path: Path) -> None:
    tokens = TokenRegistry.start(tmp_path).proxy()
    token = tokens.create("dave", "agent").get(timeout=5)
    known(tokens, token)
    tasks_side = open_tasks_db(tmp_path)
    tasks_side.execute("BEGIN IMMEDIATE")
    tasks_side.execute(
        "INSERT INTO tasks (id, description, metadata, priority, status, generation,"
        " retry_count, max_retries, needed_capabilities, submitted_by, created_at,"
        " updated_at, history) VALUES ('t', 'd', '{}', 2, 'queued', 0, 0, 3, '[]',"
        " 'x', 0, 0, '[]')"
    )
    tasks_side.execute("COMMIT")
    reloads = tokens.reloads.get(timeout=5)

    assert known(tokens, token).agent_id == "dave"
    assert tokens.reloads.get(timeout=5) == reloads


def test_the_loops_token_check_sees_every_change_without_asking_each_time(tmp_path: Path) -> None:
    registry = TokenRegistry.start(tmp_path).proxy()
    check = TokenCheck(registry, tmp_path)
    cli_side = TokenStore(open_tokens_db(tmp_path))

    async def scenario() -> None:
        made_by_hub = registry.create("erin", "agent").get(timeout=5)
        assert (await check.verify(made_by_hub)).agent_id == "erin"
        reloads = registry.reloads.get(timeout=5)
        for _ in range(5):
            assert await check.verify(made_by_hub) is not None
        assert registry.reloads.get(timeout=5) == reloads, "nothing changed, nothing re-read"

        made_by_cli = cli_side.create("frank", "agent", now_ms())
        assert (await check.verify(made_by_cli)).agent_id == "frank"
        cli_side.revoke("erin")
        assert await check.verify(made_by_hub) is None
        registry.revoke("frank").get(timeout=5)
        assert await check.verify(made_by_cli) is None

    asyncio.run(scenario())
    check.close()


def test_log_settings_from_env_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    assert config_from_args([], {"AGENTCOM_LOG_LEVEL": "warning"}).log_level == "warning"
    with pytest.raises(SystemExit):
        config_from_args([], {"AGENTCOM_LOG_FORMAT": "yaml"})
    assert "AGENTCOM_LOG_FORMAT" in capsys.readouterr().err
