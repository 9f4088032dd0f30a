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


# Parts of the page this hub may not have yet (other features): the page asks,
# gets 404 and does without. A 404 the hub really answers is no page error.
OPTIONAL_ROUTES = ("/api/events", "/api/analytics/agents")


def console_errors(page: Dashboard) -> list[dict[str, Any]]:
    """SEVERE browser log entries (script errors, failed loads, CSP refusals)."""
    absent = [route for route in OPTIONAL_ROUTES if page.hub.status(route) == 404]
    return [
        entry
        for entry in page.console()
        if entry["level"] == "SEVERE"
        and not any(
            f"{page.hub.url}{route}" in entry["message"]
            and ("404" in entry["message"] or "MIME type" in entry["message"])
            for route in absent
        )
    ]


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

    page.open()  # no token in the address: the kept one is used
    page.wait_loaded()
    assert not page.visible("token-panel")

    # Replaced, not pushed: going back leaves the page, it does not find the token.
    page.driver.back()
    page.driver.back()
    assert "token" not in page.driver.current_url


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
    worker = hub.agent("bob", ["build"])
    task_id = hub.submit("flaky build", needed_capabilities=["build"], max_retries=0)
    fail_to_dead_letter(worker, task_id, "boom")
    worker.close()

    page.open_loaded(hub.admin_token)
    row = page.wait_for(lambda: page.row("dead", task_id), "the task in the dead letter")
    assert row["cells"][1:5] == ["flaky build", "normal", "boom", "bob"]
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
    """A busy hub on the page; saved to $AGENTCOM_SCREENSHOT when it is set."""
    hub = page.hub
    agents = [
        sim(hub, "alice", "delay:60000", capabilities=["code", "python"], name="Alice"),
        sim(hub, "bob", "delay:60000", capabilities=["code", "rust"], name="Bob"),
        sim(hub, "carol", "complete", capabilities=["docs"], name="Carol"),
    ]
    try:
        for description, lane, needs in [
            ("Refactor the scheduler's matching loop", "high", ["code"]),
            ("Port the retry logic to Rust", "normal", ["code"]),
            ("Write the release notes", "low", ["docs"]),
            ("Train the ranking model", "urgent", ["gpu"]),
            ("Render the architecture diagram", "normal", ["gpu"]),
        ]:
            hub.submit(description, priority=lane, needed_capabilities=needs)
        page.open_loaded(hub.admin_token)
        page.wait_for(lambda: len(page.rows("agents")) == 3, "three agents")
        page.wait_for(lambda: len(page.rows("work")) == 4, "four tasks queued or assigned")
        path = os.environ.get("AGENTCOM_SCREENSHOT")
        target = Path(path) if path else tmp_path / "dashboard.png"
        assert page.driver.save_screenshot(str(target))
        assert target.stat().st_size > 10_000
    finally:
        for agent in agents:
            agent.stop()
