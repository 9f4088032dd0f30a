"""``--store`` / ``AGENTCOM_STORE``: which store a URL names, and what is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentcom.config import config_from_args
from agentcom.stores import stores_at
from agentcom.stores.interface import BadStoreUrl
from agentcom.stores.sqlite import SqliteStores


def test_the_flag_wins_over_the_env_var_and_the_default_is_the_data_dir() -> None:
    env = {"AGENTCOM_STORE": "postgresql://env@127.0.0.1:5432/a"}
    assert config_from_args([], env).store == env["AGENTCOM_STORE"]
    flagged = config_from_args(["--store", "sqlite:///srv/agentcom"], env)
    assert flagged.store == "sqlite:///srv/agentcom"
    assert config_from_args([], {}).store is None


def test_a_url_of_another_kind_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        config_from_args(["--store", "mysql://root@127.0.0.1/db"])
    assert exit_.value.code == 2
    assert "sqlite:///path/to/dir or postgresql://user@host:port/db" in capsys.readouterr().err


def test_sqlite_urls_name_a_directory(tmp_path: Path) -> None:
    default = stores_at(None, tmp_path / "data")
    named = stores_at(f"sqlite://{tmp_path}/elsewhere", tmp_path / "data")
    assert isinstance(default, SqliteStores) and default.data_dir == tmp_path / "data"
    assert isinstance(named, SqliteStores) and named.data_dir == tmp_path / "elsewhere"
    with pytest.raises(BadStoreUrl):
        stores_at("sqlite://", tmp_path)


def test_a_password_stays_out_of_what_is_shown() -> None:
    pytest.importorskip("psycopg")
    stores = stores_at("postgresql://agentcom:s3cret@127.0.0.1:5432/agentcom", Path())
    assert stores.description == "postgresql://agentcom:***@127.0.0.1:5432/agentcom"
