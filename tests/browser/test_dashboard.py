"""The dashboard in a real browser: headless Chromium looking at a real hub.

What a person sees is read from the page (innerText of its tables and
header), never from the page's internal state; the only things read from the
page's script are the counters it keeps for these tests (how many times it
loaded the state) and a flag the test sets once on load, which a reload
would lose.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from simulator.agent_sim import AgentSim
from tests.browser.conftest import Dashboard, Hub
from tests.integration.helpers import fail_to_dead_letter

XSS_ID = '<img src=x onerror="window.__xss=1">'


def console_errors(page: Dashboard) -> list[dict[str, Any]]:
    """SEVERE browser log entries (script errors, failed loads, CSP refusals)."""
    return [entry for entry in page.console() if entry["level"] == "SEVERE"]


def sim(hub: Hub, agent_id: str, behaviour: str = "complete", **kw: Any) -> AgentSim:
    agent = AgentSim(hub.ws_url, agent_id, hub.thread.create_token(agent_id), behaviour, **kw)
    agent.start()
    agent.wait_identified()
    return agent


def test_page_asks_for_a_token_and_loads_without_console_errors(page: Dashboard) -> None:
    page.open()
    page.wait_for(lambda: page.visible("token-panel"), "token form")
    assert not page.visible("main")
    assert console_errors(page) == []

    page.driver.find_element("id", "token-input").send_keys(page.hub.viewer_token)
    page.driver.find_element("css selector", "#token-form button").click()
    page.wait_loaded()
    assert page.text("agents-connected") == "0"
    assert page.text("dead-count") == "0"
    assert console_errors(page) == []


def test_a_refused_token_asks_again(page: Dashboard) -> None:
    page.open("not-a-token")
    page.wait_for(lambda: page.visible("token-panel"), "token form")
    assert "refused" in page.text("token-error")


def test_a_token_link_is_kept_and_leaves_the_address_bar(page: Dashboard) -> None:
    page.open_loaded(page.hub.viewer_token)
    assert "token" not in page.driver.current_url
    assert page.driver.current_url.endswith("/dashboard")

    # Replaced, not pushed: one step back leaves the page (to the blank page
    # the browser started on) and finds no address holding the token.
    page.driver.back()
    assert "token" not in page.driver.current_url

    page.open()  # no token in the address: the kept one is used
    page.wait_loaded()
    assert not page.visible("token-panel")


def test_lists_a_connected_simulated_agent(page: Dashboard) -> None:
    agent = sim(page.hub, "alice", capabilities=["code", "python"], name="Alice")
    try:
        page.open_loaded(page.hub.viewer_token)
        row = page.wait_for(lambda: page.row("agents", "alice"), "alice in the agents table")
        agent_id, name, fsm_state, task, flags, capabilities = row["cells"][:6]
        assert (agent_id, name, fsm_state, task, flags) == ("alice", "Alice", "idle", "—", "")
        assert capabilities.split() == ["code", "python"]
        assert page.text("agents-connected") == "1"
    finally:
        agent.stop()


def test_html_in_an_agent_id_and_a_description_is_shown_as_text(page: Dashboard) -> None:
    hub = page.hub
    agent = sim(hub, XSS_ID, capabilities=["<b>cap</b>"], name="<script>window.__xss=2</script>")
    description = '<img src=y onerror="window.__xss=3">'
    hub.submit(description, needed_capabilities=["never-offered"])
    try:
        page.open_loaded(hub.viewer_token)
        row = page.wait_for(lambda: page.row("agents", XSS_ID), "the agent with HTML in its id")
        assert row["cells"][:3] == [XSS_ID, "<script>window.__xss=2</script>", "idle"]
        assert row["cells"][5] == "<b>cap</b>"
        work = page.wait_for(lambda: page.rows("work"), "the task with HTML in its description")
        assert work[0]["cells"][1] == description
        assert page.js("return window.__xss") is None
        assert (
            page.js("return document.querySelectorAll('main img, main script, main b').length") == 0
        )
        assert console_errors(page) == []
    finally:
        agent.stop()


def test_retry_on_a_dead_letter_task_requeues_it(page: Dashboard) -> None:
    hub = page.hub
    page.open_loaded(hub.admin_token)
    page.wait_for(lambda: page.text("hub-status") == "up, live", "a live event stream")
    worker = hub.agent("bob", ["build"])
    task_id = hub.submit("flaky build", needed_capabilities=["build"], max_retries=0)
    fail_to_dead_letter(worker, task_id, "boom")
    worker.close()

    # It fails after the page loaded: the dead letter learns it from events.
    page.wait_for(
        lambda: (
            (row := page.row("dead", task_id))
            and row["cells"][1:5] == ["flaky build", "normal", "boom", "bob"]
        ),
        "the task in the dead letter with its error and last holder",
        look=lambda: page.rows("dead"),
    )
    assert page.text("dead-count") == "1"

    page.driver.find_element("css selector", f'#dead tr[data-task-id="{task_id}"] button').click()
    page.wait_for(lambda: page.row("dead", task_id) is None, "the task leaving the dead letter")
    queued = page.wait_for(lambda: page.row("work", task_id), "the task back in its lane")
    assert queued["cells"][4] == "queued"
    assert "back in its lane" in page.text("dead-message")
    assert hub.api("GET", f"/api/tasks/{task_id}").body["status"] == "queued"


def test_retry_with_a_viewer_token_says_it_is_not_allowed(page: Dashboard) -> None:
    hub = page.hub
    worker = hub.agent("bob", ["build"])
    task_id = hub.submit("flaky build", needed_capabilities=["build"], max_retries=0)
    fail_to_dead_letter(worker, task_id, "boom")

    page.open_loaded(hub.viewer_token)
    page.wait_for(lambda: page.row("dead", task_id), "the task in the dead letter")
    page.driver.find_element("css selector", f'#dead tr[data-task-id="{task_id}"] button').click()
    page.wait_for(lambda: page.visible("dead-message"), "a message about the refused retry")
    assert page.text("dead-message").startswith("Not allowed")
    assert page.row("dead", task_id) is not None
    assert hub.api("GET", f"/api/tasks/{task_id}").body["status"] == "dead_letter"


def test_submit_form_queues_a_task(page: Dashboard) -> None:
    page.open_loaded(page.hub.admin_token)
    page.driver.find_element("id", "submit-description").send_keys("from the form")
    page.driver.find_element("id", "submit-capabilities").send_keys("gpu, render")
    page.driver.find_element("css selector", "#submit-form button").click()
    page.wait_for(lambda: page.text("submit-message").startswith("Queued task-"), "queued reply")
    task_id = page.text("submit-message").split()[1]
    task = page.hub.api("GET", f"/api/tasks/{task_id}").body
    assert (task["description"], task["needed_capabilities"]) == (
        "from the form",
        ["gpu", "render"],
    )


def test_screenshot(page: Dashboard, tmp_path: Path) -> None:
    """A busy hub on the page; saved to $AGENTCOM_SCREENSHOT (docs/dashboard.png) when set."""
    hub = page.hub
    hub.api("POST", "/api/channels", {"name": "builds", "description": "CI news"})
    hub.api("POST", "/api/channels/builds/publish", {"payload": {"text": "main is green"}})
    page.open_loaded(hub.admin_token)
    page.wait_for(lambda: page.text("hub-status") == "up, live", "a live event stream")

    carol = sim(hub, "carol", "complete", capabilities=["docs"], name="Carol")
    try:
        for title in ("Write the release notes", "Update the protocol page", "Proofread README"):
            hub.submit(title, priority="low", needed_capabilities=["docs"])
        working = [
            ("alice", ["code", "python"], "Refactor the scheduler's matching loop", "high", 40),
            ("bob", ["code", "rust"], "Port the retry logic to Rust", "normal", 75),
        ]
        for agent_id, capabilities, description, lane, progress in working:
            agent = hub.agent(agent_id, capabilities, name=agent_id.title())
            task_id = hub.submit(description, priority=lane, needed_capabilities=capabilities[1:])
            agent.recv("task_assign", task_id=task_id)
            agent.send({"type": "task_accepted", "task_id": task_id})
            agent.send({"type": "task_progress", "task_id": task_id, "progress": progress})
        builder = hub.agent("dave", ["build"], name="Dave")
        failed = hub.submit("Build the release wheel", needed_capabilities=["build"], max_retries=0)
        fail_to_dead_letter(builder, failed, "exit 2: tests/unit/test_timers.py failed")
        dropped = hub.submit("Port the dashboard to a framework", needed_capabilities=["js"])
        hub.api("POST", f"/api/tasks/{dropped}/cancel", {"reason": "plain JS it stays"})
        hub.submit("Train the ranking model", priority="urgent", needed_capabilities=["gpu"])
        hub.submit("Render the architecture diagram", needed_capabilities=["gpu"])

        page.wait_for(lambda: len(page.rows("agents")) == 4, "four agents")
        page.wait_for(
            lambda: sorted(row["progress"] for row in page.rows("work")) == ["", "", "40", "75"],
            "two tasks at work and two queued",
            look=lambda: page.rows("work"),
        )
        page.wait_for(lambda: page.text("completed-hour") == "3", "three completed")
        page.wait_for(lambda: page.text("cancelled-hour") == "1", "one cancelled")
        page.wait_for(lambda: page.row("dead", failed), "the failed build in the dead letter")
        path = os.environ.get("AGENTCOM_SCREENSHOT")
        target = Path(path) if path else tmp_path / "dashboard.png"
        page.js("window.scrollTo(0, 0)")
        assert page.driver.save_screenshot(str(target))
        assert target.stat().st_size > 10_000
        assert console_errors(page) == []
    finally:
        carol.stop()


def test_a_task_appears_is_assigned_moves_its_progress_bar_and_completes_live(
    page: Dashboard,
) -> None:
    hub = page.hub
    page.open_loaded(hub.viewer_token)
    page.wait_for(lambda: page.text("hub-status") == "up, live", "a live event stream")
    page.mark_page()
    loads = page.counters()["stateLoads"]

    def work_row(what: str, **expected: str) -> dict[str, Any]:
        columns = (
            "task",
            "description",
            "lane",
            "needs",
            "status",
            "holder",
            "age",
            "progress",
            "action",
        )

        def check() -> dict[str, Any] | None:
            row = page.row("work", task_id)
            if row is None:
                return None
            cells = dict(zip(columns, row["cells"], strict=True), progress=row["progress"])
            return row if all(cells[k] == v for k, v in expected.items()) else None

        found: dict[str, Any] = page.wait_for(check, what, look=lambda: page.row("work", task_id))
        return found

    task_id = hub.submit("render the frames", priority="high", needed_capabilities=["render"])
    work_row(
        "the new task, queued",
        description="render the frames",
        lane="high",
        needs="render",
        status="queued",
        holder="—",
        progress="",
    )

    worker = hub.agent("renderer", ["render"])  # connects after the page loaded
    assign = worker.recv("task_assign", task_id=task_id)
    work_row("the task assigned to renderer", status="assigned", holder="renderer")
    page.wait_for(
        lambda: (
            (row := page.row("agents", "renderer")) and row["cells"][2:4] == ["assigned", task_id]
        ),
        "renderer assigned in the agents table",
        look=lambda: page.rows("agents"),
    )

    worker.send({"type": "task_accepted", "task_id": task_id})
    worker.recv("task_ack", task_id=task_id, status="accepted")
    work_row("the task accepted", status="assigned, accepted")
    for progress in (30, 70):
        worker.send({"type": "task_progress", "task_id": task_id, "progress": progress})
        row = work_row(f"the progress bar at {progress}", progress=str(progress))
        assert row["cells"][7] == f"{progress}%"
    bar_width = page.js(
        "return document.querySelector('#work tr[data-task-id=\"' + arguments[0] + '\"] .fill')"
        ".style.width",
        task_id,
    )
    assert bar_width == "70%"

    worker.send(
        {
            "type": "task_complete",
            "task_id": task_id,
            "generation": assign["generation"],
            "result": {"frames": 24},
        }
    )
    worker.recv("task_ack", task_id=task_id, status="complete")
    page.wait_for(lambda: page.row("work", task_id) is None, "the task leaving the work table")
    page.wait_for(lambda: page.text("completed-hour") == "1", "one completed task in the header")
    page.wait_for(
        lambda: any(task_id in item for item in feed(page, "task_completed")),
        "task_completed in the event feed",
    )
    idle = page.wait_for(
        lambda: (row := page.row("agents", "renderer")) and row["cells"][2] == "idle" and row,
        "renderer idle again",
    )
    # Tasks done in 24 h: from the analytics route and the events since; a
    # hub without analytics has the columns hidden.
    shown = page.js(
        "return getComputedStyle(document.querySelector('#agents th.analytics')).display"
    )
    if hub.status("/api/analytics/agents") == 200:
        assert (shown, idle["cells"][7]) == ("table-cell", "1")
    else:
        assert shown == "none"

    worker.close()
    page.wait_for(lambda: page.row("agents", "renderer") is None, "renderer leaving the table")

    # All of it without a reload, and without loading the state again.
    assert page.same_page()
    assert page.counters()["stateLoads"] == loads
    assert console_errors(page) == []


def feed(page: Dashboard, event_type: str) -> list[str]:
    items: list[str] = page.js(
        "return Array.from(document.querySelectorAll('#feed li'))"
        ".filter(li => li.dataset.type === arguments[0]).map(li => li.innerText)",
        event_type,
    )
    return items


def test_after_a_hub_restart_the_page_loads_the_state_again(page: Dashboard) -> None:
    hub = page.hub
    before = hub.submit("from before the restart", needed_capabilities=["nobody"])
    page.open_loaded(hub.viewer_token)
    page.wait_for(lambda: page.text("hub-status") == "up, live", "a live event stream")
    page.wait_for(lambda: page.row("work", before), "the first task")
    page.mark_page()
    loads = page.counters()["stateLoads"]

    def loaded_again(times: int) -> None:
        page.wait_for(
            lambda: page.counters()["stateLoads"] == loads + times,
            f"the state loaded again ({times})",
            timeout=20,
            look=page.counters,
        )
        page.wait_for(lambda: page.text("hub-status") == "up, live", "a live stream again")

    # No event seen yet: EventSource reconnects with no id to resume from, so
    # the page cannot know what it missed and loads the state again.
    hub.restart()
    loaded_again(1)
    assert page.counters()["resets"] == 0

    # With an event seen, EventSource reconnects with Last-Event-ID, which the
    # new hub does not hold: it answers `reset`, and the page loads again.
    seen = hub.submit("seen live", needed_capabilities=["nobody"])
    page.wait_for(lambda: page.counters()["lastEventId"] is not None, "an event with an id")
    page.wait_for(lambda: page.row("work", seen), "the task submitted live")
    hub.restart()
    loaded_again(2)
    assert page.counters()["resets"] == 1

    after = hub.submit("after the restart", needed_capabilities=["nobody"])
    page.wait_for(lambda: page.row("work", after), "a task submitted to the new hub")
    assert page.row("work", before) is not None
    assert page.same_page()


def test_channels_and_recent_messages_are_shown_and_follow_the_stream(page: Dashboard) -> None:
    hub = page.hub
    alice = sim(hub, "alice")
    bob = sim(hub, "bob")
    try:
        hub.api("POST", "/api/channels", {"name": "builds", "description": "<i>CI</i> news"})
        alice.publish("builds", {"text": "main is green"})
        alice.send_message("bob", {"text": "<b>review PR 42</b>"})
        page.open_loaded(hub.viewer_token)
        channels = page.wait_for(lambda: page.rows("channels"), "the channel")
        assert channels[0]["cells"] == ["#builds", "<i>CI</i> news", "0", "operator"]
        loaded = page.wait_for(lambda: messages(page), "the messages from before the load")
        assert "alice → bob" in loaded[0] and "<b>review PR 42</b>" in loaded[0]
        assert "alice → #builds" in loaded[1] and "main is green" in loaded[1]

        page.wait_for(lambda: page.text("hub-status") == "up, live", "a live event stream")
        bob.send_message("alice", {"text": "on it"})
        page.wait_for(
            lambda: len(messages(page)) == 3 and "bob → alice" in messages(page)[0],
            "bob's answer, from the event stream",
            look=lambda: messages(page),
        )
        assert page.js("return document.querySelectorAll('#messages i, #messages b').length") == 0
    finally:
        alice.stop()
        bob.stop()


def messages(page: Dashboard) -> list[str]:
    """The recent messages as shown, newest first."""
    items: list[str] = page.js(
        "return Array.from(document.querySelectorAll('#messages li')).map(li => li.innerText)"
    )
    return items


def test_the_queue_loads_page_by_page_and_draws_the_oldest(page: Dashboard) -> None:
    """1,001 queued tasks: two pages of the task list (limit 1000, then the cursor)."""
    hub = page.hub
    first = hub.submit("the oldest", needed_capabilities=["nobody"])
    for n in range(1000):
        hub.submit(f"queued {n}", needed_capabilities=["nobody"])
    page.open_loaded(hub.viewer_token)
    assert page.text("queued-lanes") == "urgent 0 · high 0 · normal 1001 · low 0"
    rows = page.rows("work")
    assert len(rows) == 500 and rows[0]["key"] == first
    assert page.text("work-more") == "Showing the oldest 500; 501 more not drawn."


def test_an_agent_token_sees_its_own_tasks(page: Dashboard) -> None:
    hub = page.hub
    own = hub.api(
        "POST", "/api/tasks", {"description": "mine", "needed_capabilities": ["x"]}, token=hub.token
    ).body["task_id"]
    other = hub.submit("someone else's", needed_capabilities=["x"])
    page.open_loaded(hub.token)
    page.wait_for(lambda: page.text("hub-status") == "up, live", "a live event stream")
    assert [row["key"] for row in page.rows("work")] == [own]

    # Another's task first: once the agent's own later task is drawn, the
    # stream has passed the other one, which must not be on the page.
    hub.submit("not mine either", needed_capabilities=["x"])
    later = hub.api(
        "POST",
        "/api/tasks",
        {"description": "mine too", "needed_capabilities": ["x"]},
        token=hub.token,
    ).body["task_id"]
    page.wait_for(lambda: page.row("work", later), "the agent's new task, from the stream")
    assert [row["key"] for row in page.rows("work")] == [own, later]
    assert other not in page.text("feed")
    assert console_errors(page) == []


def test_a_burst_of_work_is_counted_exactly_from_the_stream(page: Dashboard) -> None:
    """300 tasks through three agents while the page watches: every completion counted once."""
    hub = page.hub
    page.open_loaded(hub.viewer_token)
    page.wait_for(lambda: page.text("hub-status") == "up, live", "a live event stream")
    page.mark_page()
    loads = page.counters()["stateLoads"]
    agents = [sim(hub, f"worker-{n}", "complete") for n in range(3)]
    try:
        for n in range(300):
            hub.submit(f"burst {n}")
        page.wait_for(
            lambda: page.text("completed-hour") == "300" and not page.rows("work"),
            "300 completions and an empty work table",
            timeout=60,
            look=lambda: (page.text("completed-hour"), len(page.rows("work"))),
        )
        page.wait_for(
            lambda: [row["cells"][2] for row in page.rows("agents")] == ["idle"] * 3,
            "three idle agents",
        )
        done = [int(row["cells"][7]) for row in page.rows("agents")]
        assert sum(done) == 300, done
        assert page.same_page() and page.counters()["stateLoads"] == loads
    finally:
        for agent in agents:
            agent.stop()


# --- cancelling a task (issue 12) ---------------------------------------------------------

# Injected before the page's own script: while window.__eventsHeld is true, the
# page's named stream events are dropped, so its rows go stale on purpose.
HOLD_EVENTS_JS = """
window.__eventsHeld = false;
const RealEventSource = window.EventSource;
window.EventSource = class extends RealEventSource {
  addEventListener(type, listener, options) {
    super.addEventListener(type, (message) => { if (!window.__eventsHeld) listener(message); }, options);
  }
};
"""


def cancel_button(page: Dashboard, task_id: str) -> Any:
    return page.driver.find_element(
        "css selector", f'#work tr[data-task-id="{task_id}"] button.cancel'
    )


def button_label(page: Dashboard, task_id: str) -> str | None:
    label: str | None = page.js(
        "const b = document.querySelector("
        "'#work tr[data-task-id=\"' + arguments[0] + '\"] button.cancel');"
        " return b ? b.innerText + (b.disabled ? ' (disabled)' : '') : null",
        task_id,
    )
    return label


def click_cancel_and_confirm(page: Dashboard, task_id: str) -> None:
    cancel_button(page, task_id).click()
    page.wait_for(
        lambda: button_label(page, task_id) == "Confirm cancel",
        "the button asking for confirmation",
        look=lambda: button_label(page, task_id),
    )
    cancel_button(page, task_id).click()


def live_page(page: Dashboard, token: str) -> None:
    page.open_loaded(token)
    page.wait_for(lambda: page.text("hub-status") == "up, live", "a live event stream")


def test_cancel_a_queued_task_from_the_page(page: Dashboard) -> None:
    hub = page.hub
    task_id = hub.submit("nobody can do this", needed_capabilities=["nobody"])
    live_page(page, hub.admin_token)
    row = page.wait_for(lambda: page.row("work", task_id), "the queued task")
    assert row["cells"][8] == "Cancel"
    assert page.text("cancelled-hour") == "0"

    # One click only asks; unanswered, the question goes away and nothing changed.
    cancel_button(page, task_id).click()
    assert button_label(page, task_id) == "Confirm cancel"
    page.wait_for(
        lambda: button_label(page, task_id) == "Cancel",
        "the confirmation running out",
        look=lambda: button_label(page, task_id),
    )
    assert hub.api("GET", f"/api/tasks/{task_id}").body["status"] == "queued"

    page.driver.find_element("id", "cancel-reason").send_keys("<b>not needed</b>")
    cancel_button(page, task_id).click()
    # A task queued meanwhile redraws the table: the question stays.
    other = hub.submit("queued meanwhile", needed_capabilities=["nobody"])
    page.wait_for(lambda: page.row("work", other), "the other task drawn")
    assert button_label(page, task_id) == "Confirm cancel"
    cancel_button(page, task_id).click()
    page.wait_for(lambda: page.row("work", task_id) is None, "the task leaving the work table")
    assert page.text("work-message") == f"Task {task_id} is cancelled (it was queued)."
    task = hub.api("GET", f"/api/tasks/{task_id}").body
    assert task["status"] == "cancelled"
    assert task["history"][-1]["details"]["reason"] == "<b>not needed</b>"
    page.wait_for(lambda: page.text("cancelled-hour") == "1", "one cancelled in the header")
    assert page.text("queued-lanes") == "urgent 0 · high 0 · normal 1 · low 0"
    item = page.wait_for(lambda: feed(page, "task_cancelled"), "task_cancelled in the feed")
    assert task_id in item[0] and "reason=<b>not needed</b>" in item[0]
    assert "previous_status=queued" in item[0] and "cancelled_by=operator" in item[0]
    assert page.js("return document.querySelectorAll('#feed b').length") == 0
    assert console_errors(page) == []


def test_cancel_an_assigned_task_from_the_page_tells_its_holder(page: Dashboard) -> None:
    hub = page.hub
    worker = hub.agent("bob", ["build"])
    task_id = hub.submit("a long build", needed_capabilities=["build"])
    worker.recv("task_assign", task_id=task_id)
    live_page(page, hub.admin_token)
    page.wait_for(
        lambda: (row := page.row("work", task_id)) and row["cells"][4:6] == ["assigned", "bob"],
        "the task assigned to bob",
        look=lambda: page.row("work", task_id),
    )

    click_cancel_and_confirm(page, task_id)  # no reason given
    told = worker.recv("task_cancelled", task_id=task_id)
    assert told["reason"] == "cancelled"
    page.wait_for(lambda: page.row("work", task_id) is None, "the task leaving the work table")
    assert page.text("work-message") == f"Task {task_id} is cancelled (it was assigned)."
    assert hub.api("GET", f"/api/tasks/{task_id}").body["status"] == "cancelled"
    page.wait_for(
        lambda: (row := page.row("agents", "bob")) and row["cells"][2:4] == ["idle", "—"],
        "bob idle again",
        look=lambda: page.row("agents", "bob"),
    )
    item = page.wait_for(lambda: feed(page, "task_cancelled"), "task_cancelled in the feed")
    assert "agent_id=bob" in item[0] and "previous_status=assigned" in item[0]


def test_cancel_with_a_viewer_token_says_it_is_not_allowed(page: Dashboard) -> None:
    hub = page.hub
    task_id = hub.submit("nobody can do this", needed_capabilities=["nobody"])
    live_page(page, hub.viewer_token)
    page.wait_for(lambda: page.row("work", task_id), "the queued task")

    click_cancel_and_confirm(page, task_id)
    page.wait_for(lambda: page.visible("work-message"), "a message about the refused cancel")
    assert page.text("work-message").startswith(f"Not allowed: this token may not cancel {task_id}")
    page.wait_for(lambda: button_label(page, task_id) == "Cancel", "the button back, enabled")
    assert page.row("work", task_id) is not None
    assert hub.api("GET", f"/api/tasks/{task_id}").body["status"] == "queued"
    assert page.text("cancelled-hour") == "0"


def test_a_cancel_by_another_client_updates_the_page(page: Dashboard) -> None:
    hub = page.hub
    kept = hub.submit("stays", needed_capabilities=["nobody"])
    gone = hub.submit("called off elsewhere", needed_capabilities=["nobody"])
    live_page(page, hub.viewer_token)
    page.wait_for(lambda: len(page.rows("work")) == 2, "both tasks")
    page.mark_page()
    loads = page.counters()["stateLoads"]

    reply = hub.api("POST", f"/api/tasks/{gone}/cancel", {"reason": "<i>superseded</i>"})
    assert reply.status == 200, reply
    page.wait_for(lambda: page.row("work", gone) is None, "the cancelled task leaving the page")
    assert [row["key"] for row in page.rows("work")] == [kept]
    page.wait_for(lambda: page.text("cancelled-hour") == "1", "one cancelled in the header")
    assert page.text("queued-lanes") == "urgent 0 · high 0 · normal 1 · low 0"
    item = page.wait_for(lambda: feed(page, "task_cancelled"), "task_cancelled in the feed")
    assert gone in item[0] and "reason=<i>superseded</i>" in item[0]
    assert page.js("return document.querySelectorAll('#feed i').length") == 0
    assert page.same_page() and page.counters()["stateLoads"] == loads


def test_with_the_stream_held_the_page_goes_by_the_answer_to_its_cancel(
    page: Dashboard,
) -> None:
    """No event reaches the page: a 200 takes the row away by itself, and a 409
    says what the task already became."""
    hub = page.hub
    worker = hub.agent("bob", ["build"])
    done = hub.submit("a quick build", needed_capabilities=["build"])
    assign = worker.recv("task_assign", task_id=done)
    queued = hub.submit("nobody can do this", needed_capabilities=["nobody"])
    page.driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": HOLD_EVENTS_JS})
    live_page(page, hub.admin_token)
    page.wait_for(lambda: len(page.rows("work")) == 2, "the assigned and the queued task")
    page.js("window.__eventsHeld = true")

    click_cancel_and_confirm(page, queued)
    page.wait_for(lambda: page.row("work", queued) is None, "the cancelled task leaving the page")
    assert page.text("work-message") == f"Task {queued} is cancelled (it was queued)."
    page.wait_for(lambda: page.text("cancelled-hour") == "1", "one cancelled in the header")

    complete = {"type": "task_complete", "task_id": done, "generation": assign["generation"]}
    worker.send({**complete, "result": {}})
    worker.recv("task_ack", task_id=done, status="complete")
    assert page.row("work", done) is not None  # stale: the page did not hear of it

    click_cancel_and_confirm(page, done)
    page.wait_for(
        lambda: page.text("work-message").startswith("Not cancelled"),
        "a message about the refused cancel",
        look=lambda: page.text("work-message"),
    )
    assert page.text("work-message") == f"Not cancelled: task {done} is already completed."
    assert button_label(page, done) == "Already completed (disabled)"
    assert hub.api("GET", f"/api/tasks/{done}").body["status"] == "completed"
    assert feed(page, "task_cancelled") == []  # every event was held
