// agentcom dashboard: plain JavaScript, no library, no build step.
//
// It loads the hub's state once over the HTTP API, then follows the event
// stream (GET /api/events, Server-Sent Events) and changes that state one
// event at a time: no reload, no periodic refresh. EventSource reconnects by
// itself and resumes with Last-Event-ID; a `reset` event (the hub no longer
// holds what this page missed) loads the state again.
//
// Every value from the hub reaches the page through textContent, a text node
// or an attribute, never parsed as markup: an agent id that holds HTML is
// shown as text.
(() => {
  "use strict";

  const TOKEN_KEY = "agentcom.dashboard.token";
  const LANES = ["urgent", "high", "normal", "low"];
  const STATES = new Set(["idle", "assigned", "working", "blocked", "offline"]);
  const EVENT_TYPES = [
    "task_queued", "task_assigned", "task_accepted", "task_progress", "task_completed",
    "task_failed", "task_reclaimed", "task_rejected", "task_dead_letter", "task_requeued",
    "task_cancelled",
    "agent_joined", "agent_left", "agent_state", "message_sent", "channel_published",
  ];
  const PAGE_SIZE = 1000;
  const MAX_PAGES = 10; // at most 10,000 queued, assigned or dead-letter tasks are loaded
  const MAX_ROWS = 500; // rows drawn per table; the rest are counted
  const FEED_MAX = 200;
  const MESSAGES_MAX = 100;
  const HOUR_MS = 3600 * 1000;
  const MINUTE_MS = 60 * 1000;
  const DETAIL_FETCHES = 4; // task descriptions fetched at once, for tasks queued after load
  const DETAIL_QUEUE_MAX = 200;
  const CONFIRM_MS = 4000; // how long a Cancel button waits for its second click
  const FINISHED_WORDS = {
    completed: "completed",
    dead_letter: "in the dead letter",
    cancelled: "cancelled",
  };

  // What the page knows. Counts in the header are derived from these sets,
  // so replaying an event the state already reflects changes nothing.
  const state = {
    token: null,
    agents: new Map(), // agent_id -> {agent_id, name, fsm_state, current_task_id, flags, capabilities, connected_at}
    tasks: new Map(), // queued and assigned: id -> task (+ progress, accepted)
    deadLetter: new Map(),
    moreTasks: false,
    moreDead: false,
    completed: new Map(), // "task_id/generation" -> timestamp, seen in events, last hour
    cancelled: new Map(), // task_id -> timestamp, seen in events (or a 200 to this page), last hour
    depth: [], // [timestamp, queued] samples, last hour
    feed: [],
    analytics: null, // Map agent_id -> row, or null when the hub has no analytics
    channels: null, // list, or null when not readable with this token
    messages: null,
    health: null,
    loadedAt: null,
    live: "unknown",
  };

  // Read by the browser tests; nothing else depends on it.
  const dash = {
    stateLoads: 0,
    eventsApplied: 0,
    lastEventId: null,
    streamOpened: 0,
    resets: 0,
  };
  window.agentcomDashboard = dash;

  let source = null;
  let retryTimer = null;
  let retryDelay = 1000;
  let loading = false;
  let loadAgain = false;
  let buffered = [];
  const detailQueue = [];
  let detailRunning = 0;
  // One Cancel button per drawn task, kept across redraws: the work table is
  // redrawn on every event, and a new button each time would lose a pending
  // confirmation, a pending request, or a click landing mid-redraw.
  const cancelButtons = new Map();

  const $ = (id) => document.getElementById(id);

  // --- building DOM from data, safely ------------------------------------

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    if (props) {
      for (const [key, value] of Object.entries(props)) {
        if (value === undefined || value === null) continue;
        if (key === "text") node.textContent = String(value);
        else if (key === "class") node.className = value;
        else node.setAttribute(key, String(value));
      }
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(typeof child === "string" ? child : child); // strings become text nodes
    }
    return node;
  }

  function text(value) {
    if (value === null || value === undefined || value === "") return "—";
    return typeof value === "string" ? value : JSON.stringify(value);
  }

  function clock(ms) {
    if (typeof ms !== "number") return "—";
    return new Date(ms).toLocaleTimeString([], { hour12: false });
  }

  function age(ms) {
    if (typeof ms !== "number") return "—";
    const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
    if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
    return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
  }

  function ageCell(since) {
    const cell = el("td", { class: "age", text: age(since) });
    if (typeof since === "number") cell.dataset.since = String(since);
    return cell;
  }

  function capName(cap) {
    if (typeof cap === "string") return cap;
    if (cap && typeof cap === "object" && typeof cap.name === "string") {
      return cap.version === undefined ? cap.name : `${cap.name} ${text(cap.version)}`;
    }
    return text(cap);
  }

  // Small labels, with a space between them so they read (and copy) as words.
  function chips(values, cls, show) {
    const nodes = [];
    for (const value of values || []) {
      if (nodes.length) nodes.push(" ");
      nodes.push(el("span", { class: cls, text: show(value) }));
    }
    return nodes;
  }

  function replaceRows(tbody, rows) {
    tbody.replaceChildren(...rows);
  }

  function notice(message) {
    const node = $("notice");
    node.textContent = message || "";
    node.hidden = !message;
  }

  // --- the token ------------------------------------------------------------

  function storedToken() {
    try {
      return localStorage.getItem(TOKEN_KEY);
    } catch {
      return null;
    }
  }

  function keepToken(token) {
    try {
      if (token) localStorage.setItem(TOKEN_KEY, token);
      else localStorage.removeItem(TOKEN_KEY);
    } catch {
      // private mode: the token lives as long as the page
    }
  }

  // A ?token= link works once: the token is kept and leaves the address bar
  // (and the history), so it is not bookmarked or shared by accident.
  function tokenFromAddress() {
    const url = new URL(window.location.href);
    if (!url.searchParams.has("token")) return null;
    const token = url.searchParams.get("token");
    url.searchParams.delete("token");
    window.history.replaceState(window.history.state, "", url.pathname + url.search + url.hash);
    return token ? token.trim() : null;
  }

  function askForToken(message) {
    stopStream();
    $("main").hidden = true;
    $("change-token").hidden = true;
    $("token-panel").hidden = false;
    const error = $("token-error");
    error.textContent = message || "";
    error.hidden = !message;
    $("token-input").focus();
  }

  // --- HTTP -------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, error, data) {
      super(`${status} ${error}`);
      this.status = status;
      this.error = error;
      this.data = data; // the whole reply body, or null
    }
  }

  async function api(method, path, body) {
    const headers = { Authorization: `Bearer ${state.token}` };
    const init = { method, headers, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    if (!response.ok) {
      const error = data && typeof data.error === "string" ? data.error : response.statusText;
      throw new ApiError(response.status, error, data);
    }
    return data;
  }

  async function allPages(path) {
    const tasks = [];
    let cursor = 0;
    for (let page = 0; page < MAX_PAGES; page += 1) {
      const sep = path.includes("?") ? "&" : "?";
      const reply = await api("GET", `${path}${sep}limit=${PAGE_SIZE}&cursor=${cursor}`);
      tasks.push(...reply.tasks);
      if (reply.next_cursor === null || reply.next_cursor === undefined) {
        return { tasks, more: false };
      }
      cursor = reply.next_cursor;
    }
    return { tasks, more: true };
  }

  // An optional part of the page: null when this hub or token does not offer it.
  async function optional(method, path) {
    try {
      return await api(method, path);
    } catch (error) {
      if (error instanceof ApiError && error.status !== 401) return null;
      throw error;
    }
  }

  // --- loading the state --------------------------------------------------------

  function lastHolder(task) {
    if (task.assigned_to) return task.assigned_to;
    const history = Array.isArray(task.history) ? task.history : [];
    for (let i = history.length - 1; i >= 0; i -= 1) {
      const details = history[i].details || {};
      if (history[i].event === "assigned" && details.agent_id) return details.agent_id;
    }
    return null;
  }

  function fromApiTask(task) {
    return {
      id: task.id,
      description: task.description,
      priority: task.priority,
      status: task.status,
      needed_capabilities: task.needed_capabilities || [],
      assigned_to: task.assigned_to,
      assigned_at: task.assigned_at,
      created_at: task.created_at,
      updated_at: task.updated_at,
      last_error: task.last_error,
      last_holder: lastHolder(task),
      submitted_by: task.submitted_by,
      progress: null,
      accepted: false,
    };
  }

  async function loadState() {
    if (loading) {
      loadAgain = true;
      return;
    }
    loading = true;
    buffered = [];
    dash.stateLoads += 1;
    try {
      const since = Date.now() - HOUR_MS;
      const [health, states, stats, queued, assigned, dead, analytics, channels, messages] =
        await Promise.all([
          fetch("/health", { cache: "no-store" }).then((r) => r.json()),
          api("GET", "/api/agents/states"),
          api("GET", "/api/tasks/stats"),
          allPages("/api/tasks?status=queued"),
          allPages("/api/tasks?status=assigned"),
          allPages("/api/tasks/dead-letter"),
          optional("GET", "/api/analytics/agents"),
          optional("GET", "/api/channels"),
          optional("GET", `/api/messages?since=${since}&limit=200`),
        ]);
      state.health = health;
      state.stats = stats;
      state.agents = new Map(states.agents.map((agent) => [agent.agent_id, agent]));
      state.tasks = new Map();
      for (const task of [...queued.tasks, ...assigned.tasks]) {
        state.tasks.set(task.id, fromApiTask(task));
      }
      state.moreTasks = queued.more || assigned.more;
      state.deadLetter = new Map(dead.tasks.map((task) => [task.id, fromApiTask(task)]));
      state.moreDead = dead.more;
      state.analytics = analyticsMap(analytics);
      state.channels = channels && Array.isArray(channels.channels) ? channels.channels : null;
      state.messages = messages && Array.isArray(messages.messages)
        ? messages.messages.slice(-MESSAGES_MAX).map(fromApiMessage)
        : null;
      if (state.loadedAt === null) state.loadedAt = Date.now();
      $("main").hidden = false;
      $("token-panel").hidden = true;
      $("change-token").hidden = false;
      // What happened while the state was loading, in order, on top of it.
      for (const event of buffered) applyEvent(event);
      sampleDepth(true);
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) {
        askForToken("The hub refused this token.");
      } else {
        notice(`Could not load the hub's state: ${error.message}`);
      }
    } finally {
      loading = false;
      buffered = [];
      renderAll();
      if (loadAgain) {
        loadAgain = false;
        loadState();
      }
    }
  }

  function analyticsMap(reply) {
    if (!reply) return null;
    const rows = Array.isArray(reply) ? reply : reply.agents;
    if (!Array.isArray(rows)) return null;
    return new Map(rows.map((row) => [row.agent_id, row]));
  }

  function fromApiMessage(message) {
    return {
      id: message.id,
      from: message.from,
      to: message.to,
      channel: message.channel,
      type: message.type,
      payload: message.payload,
      timestamp: message.timestamp,
    };
  }

  // Tasks queued after the load arrive as events, which carry no
  // description: fetch it, a few at a time, for the rows that are drawn.
  function wantDescription(taskId) {
    if (detailQueue.length >= DETAIL_QUEUE_MAX || state.tasks.size > MAX_ROWS) return;
    detailQueue.push(taskId);
    pumpDetails();
  }

  function pumpDetails() {
    while (detailRunning < DETAIL_FETCHES && detailQueue.length) {
      const taskId = detailQueue.shift();
      if (!state.tasks.has(taskId) && !state.deadLetter.has(taskId)) continue;
      detailRunning += 1;
      api("GET", `/api/tasks/${encodeURIComponent(taskId)}`)
        .then((task) => {
          for (const map of [state.tasks, state.deadLetter]) {
            const known = map.get(taskId);
            if (known) {
              known.description = task.description;
              if (!known.created_at) known.created_at = task.created_at;
            }
          }
          schedule("work", "dead");
        })
        .catch(() => {})
        .finally(() => {
          detailRunning -= 1;
          pumpDetails();
        });
    }
  }

  // --- events -------------------------------------------------------------------

  function startStream() {
    stopStream();
    let url = `/api/events?token=${encodeURIComponent(state.token)}`;
    // A new EventSource after a failed one resumes where the page stopped;
    // the hub answers what was missed, or `reset` if it no longer holds it.
    const resumeFrom = state.loadedAt === null ? null : dash.lastEventId;
    if (resumeFrom !== null) url += `&last_event_id=${resumeFrom}`;
    const es = new EventSource(url);
    source = es;
    let openedOnce = false;
    es.onopen = () => {
      const first = !openedOnce;
      openedOnce = true;
      dash.streamOpened += 1;
      retryDelay = 1000;
      setLive("up");
      // The hub follows a client from the moment it answers: load the state
      // now, and what happens meanwhile is replayed on top of it. Later
      // opens of this EventSource resume with Last-Event-ID by themselves.
      if (first && resumeFrom === null) loadState();
      // Reopened with no event seen yet, EventSource had no id to resume
      // from, and the hub cannot say what this page missed: load again.
      else if (!first && !streamId) loadState();
    };
    let streamId = resumeFrom === null ? "" : String(resumeFrom);
    const onEvent = (message) => {
      if (source !== es) return;
      if (message.lastEventId) streamId = message.lastEventId;
      let event;
      try {
        event = JSON.parse(message.data);
      } catch {
        event = {};
      }
      if (message.type === "reset" || event.type === "reset") {
        dash.resets += 1;
        dash.lastEventId = null;
        loadState();
        return;
      }
      if (typeof event.type !== "string") return;
      if (typeof event.id === "number") {
        if (dash.lastEventId !== null && event.id <= dash.lastEventId) return;
        dash.lastEventId = event.id;
      }
      if (loading || state.loadedAt === null) buffered.push(event);
      else applyEvent(event);
    };
    es.onmessage = onEvent;
    es.addEventListener("reset", onEvent);
    for (const type of EVENT_TYPES) es.addEventListener(type, onEvent);
    es.onerror = () => {
      if (source !== es) return;
      if (es.readyState === EventSource.CLOSED) {
        setLive("down");
        streamRefused(openedOnce);
      } else {
        setLive("reconnecting");
      }
    };
  }

  function stopStream() {
    if (source) source.close();
    source = null;
    if (retryTimer !== null) window.clearTimeout(retryTimer);
    retryTimer = null;
  }

  // EventSource gives up on an answer that is not a stream (401, 404, 503)
  // without saying which: ask once, then say why, or try again later.
  async function streamRefused(openedOnce) {
    source = null;
    let status = 0;
    const controller = new AbortController();
    try {
      const response = await fetch("/api/events", {
        headers: { Authorization: `Bearer ${state.token}` },
        signal: controller.signal,
        cache: "no-store",
      });
      status = response.status;
    } catch {
      status = 0;
    } finally {
      controller.abort();
    }
    if (status === 401) {
      askForToken("The hub refused this token.");
      return;
    }
    if (state.loadedAt === null && !loading) loadState();
    if (status === 404 && !openedOnce) {
      state.streamMissing = true;
      schedule("header");
      notice("This hub has no event stream (/api/events): the page shows the state as it was loaded and does not follow it.");
      return;
    }
    retryTimer = window.setTimeout(startStream, retryDelay);
    retryDelay = Math.min(retryDelay * 2, 30000);
  }

  function setLive(live) {
    state.live = live;
    schedule("header");
  }

  function task(taskId) {
    let known = state.tasks.get(taskId);
    if (!known) {
      const dead = state.deadLetter.get(taskId);
      known = dead ? { ...dead } : {
        id: taskId,
        description: undefined,
        priority: null,
        needed_capabilities: [],
        created_at: null,
        progress: null,
      };
      state.tasks.set(taskId, known);
      state.deadLetter.delete(taskId);
      if (known.description === undefined) wantDescription(taskId);
    }
    return known;
  }

  function backToQueue(event) {
    const known = task(event.task_id);
    known.status = "queued";
    known.assigned_to = null;
    known.progress = null;
    known.accepted = false;
    if (event.error !== undefined) known.last_error = event.error;
  }

  function applyEvent(event) {
    dash.eventsApplied += 1;
    const at = typeof event.timestamp === "number" ? event.timestamp : Date.now();
    switch (event.type) {
      case "task_queued": {
        const known = task(event.task_id);
        known.status = "queued";
        if (event.priority) known.priority = event.priority;
        if (Array.isArray(event.needed_capabilities)) known.needed_capabilities = event.needed_capabilities;
        if (!known.created_at) known.created_at = at;
        known.submitted_by = event.submitted_by;
        known.assigned_to = null;
        known.progress = null;
        schedule("work", "dead", "header", "chart");
        break;
      }
      case "task_assigned": {
        const known = task(event.task_id);
        known.status = "assigned";
        known.assigned_to = event.agent_id;
        known.assigned_at = at;
        known.progress = null;
        known.accepted = false;
        schedule("work", "header", "chart");
        break;
      }
      case "task_accepted":
        task(event.task_id).accepted = true;
        schedule("work");
        break;
      case "task_progress": {
        const known = task(event.task_id);
        if (typeof event.progress === "number" && Number.isFinite(event.progress)) {
          known.progress = Math.max(0, Math.min(100, event.progress));
        }
        schedule("work");
        break;
      }
      case "task_completed": {
        state.tasks.delete(event.task_id);
        state.completed.set(`${event.task_id}/${event.generation}`, at);
        countFor(event.agent_id, "tasks_completed");
        schedule("work", "header", "chart", "agents");
        break;
      }
      case "task_failed":
      case "task_reclaimed":
      case "task_rejected":
        backToQueue(event);
        schedule("work", "header", "chart");
        break;
      case "task_dead_letter": {
        const known = state.tasks.get(event.task_id) || state.deadLetter.get(event.task_id) || {
          id: event.task_id,
          needed_capabilities: [],
        };
        state.tasks.delete(event.task_id);
        state.deadLetter.set(event.task_id, {
          ...known,
          status: "dead_letter",
          last_error: event.error,
          last_holder: event.agent_id || known.last_holder || known.assigned_to,
          assigned_to: null,
          progress: null,
          updated_at: at,
        });
        if (known.description === undefined) wantDescription(event.task_id);
        schedule("work", "dead", "header", "chart");
        break;
      }
      case "task_cancelled":
        forgetCancelled(event.task_id, at);
        break;
      case "task_requeued": {
        const known = task(event.task_id);
        known.status = "queued";
        known.assigned_to = null;
        known.progress = null;
        schedule("work", "dead", "header", "chart");
        break;
      }
      case "agent_joined":
        state.agents.set(event.agent_id, {
          agent_id: event.agent_id,
          name: event.name,
          capabilities: event.capabilities || [],
          connected_at: event.connected_at || at,
          fsm_state: "idle",
          flags: [],
          current_task_id: null,
        });
        schedule("agents", "header");
        break;
      case "agent_left":
        state.agents.delete(event.agent_id);
        schedule("agents", "header");
        break;
      case "agent_state": {
        const agent = state.agents.get(event.agent_id);
        if (!agent) break; // it left; agent_joined brings it back
        if (event.fsm_state !== undefined) agent.fsm_state = event.fsm_state;
        if (event.flags !== undefined) agent.flags = event.flags;
        if (event.current_task_id !== undefined) agent.current_task_id = event.current_task_id;
        schedule("agents");
        break;
      }
      case "message_sent":
      case "channel_published":
        if (state.messages && !state.messages.some((known) => known.id === event.message_id)) {
          state.messages.push({
            id: event.message_id,
            from: event.from,
            to: event.to,
            channel: event.channel,
            timestamp: at,
            live: true,
          });
          if (state.messages.length > MESSAGES_MAX) state.messages.shift();
        }
        countFor(event.from, "messages_sent");
        if (event.type === "message_sent" && event.to) countFor(event.to, "messages_received");
        schedule("messages", "agents");
        break;
      default:
        break;
    }
    state.feed.push(event);
    if (state.feed.length > FEED_MAX) state.feed.shift();
    sampleDepth(false);
    schedule("feed");
  }

  // Cancelled is final: the task leaves the work views for good.
  function forgetCancelled(taskId, at) {
    state.tasks.delete(taskId);
    if (!state.cancelled.has(taskId)) state.cancelled.set(taskId, at);
    schedule("work", "header", "chart");
  }

  // The 24-hour columns come from the analytics route at load; events since
  // then add to them.
  const ANALYTICS_FIELDS = {
    tasks_completed: ["tasks_completed_24h", "tasks_completed"],
    messages_sent: ["messages_sent_24h", "messages_sent"],
    messages_received: ["messages_received_24h", "messages_received"],
  };

  function analyticsValue(row, what) {
    if (!row) return 0;
    for (const field of ANALYTICS_FIELDS[what]) {
      if (typeof row[field] === "number") return row[field];
    }
    return 0;
  }

  function countFor(agentId, what) {
    if (!state.analytics || typeof agentId !== "string") return;
    const row = state.analytics.get(agentId) || { agent_id: agentId };
    row[ANALYTICS_FIELDS[what][0]] = analyticsValue(row, what) + 1;
    state.analytics.set(agentId, row);
  }

  function queuedCount() {
    let queued = 0;
    for (const known of state.tasks.values()) if (known.status === "queued") queued += 1;
    return queued;
  }

  let lastSampleAt = 0;
  function sampleDepth(force) {
    const now = Date.now();
    if (!force && now - lastSampleAt < 1000) {
      state.pendingSample = true;
      return;
    }
    lastSampleAt = now;
    state.pendingSample = false;
    state.depth.push([now, queuedCount()]);
    while (state.depth.length && state.depth[0][0] < now - HOUR_MS) state.depth.shift();
  }

  // --- drawing ------------------------------------------------------------------

  const dirty = new Set();
  let renderTimer = null;

  function schedule(...parts) {
    for (const part of parts) dirty.add(part);
    if (renderTimer === null) renderTimer = window.setTimeout(renderDirty, 100);
  }

  function renderAll() {
    for (const part of ["header", "agents", "work", "dead", "chart", "feed", "messages"]) {
      dirty.add(part);
    }
    renderDirty();
  }

  function renderDirty() {
    if (renderTimer !== null) window.clearTimeout(renderTimer);
    renderTimer = null;
    if (state.loadedAt === null) return;
    const parts = new Set(dirty);
    dirty.clear();
    if (parts.has("header")) renderHeader();
    if (parts.has("agents")) renderAgents();
    if (parts.has("work")) renderWork();
    if (parts.has("dead")) renderDead();
    if (parts.has("chart")) renderChart();
    if (parts.has("feed")) renderFeed();
    if (parts.has("messages")) renderMessages();
  }

  function renderHeader() {
    const hub = $("hub-status");
    // The stream's state says whether the hub is up; a hub without one was
    // up when the state loaded.
    const hubUp = state.health && state.health.status === "ok";
    const words = {
      up: ["up, live", "up"],
      reconnecting: ["reconnecting…", "reconnecting"],
      down: hubUp && state.streamMissing ? ["up, not live", "up"] : ["not reachable", "down"],
      unknown: ["up", "up"],
    }[state.live] || [text(state.live), "unknown"];
    hub.textContent = words[0];
    hub.className = `status-${words[1]}`;
    $("agents-connected").textContent = String(state.agents.size);

    const lanes = Object.fromEntries(LANES.map((lane) => [lane, 0]));
    for (const known of state.tasks.values()) {
      if (known.status === "queued" && known.priority in lanes) lanes[known.priority] += 1;
    }
    const parts = LANES.map((lane) => `${lane} ${lanes[lane]}`);
    // Past what the page loads (10,000 tasks), the totals come from the stats
    // as they were at load.
    const stats = state.stats || {};
    const queuedAtLoad = stats.by_status ? stats.by_status.queued : "?";
    $("queued-lanes").textContent = parts.join(" · ") +
      (state.moreTasks ? ` (shown: the oldest; ${queuedAtLoad} queued at load)` : "");

    const hourAgo = Date.now() - HOUR_MS;
    const span = state.loadedAt > hourAgo ? ` since ${clock(state.loadedAt)}` : ", last hour";
    $("completed-hour").textContent = String(lastHour(state.completed, hourAgo));
    $("completed-label").textContent = `Completed${span}`;
    $("cancelled-hour").textContent = String(lastHour(state.cancelled, hourAgo));
    $("cancelled-label").textContent = `Cancelled${span}`;
    // Counted from events, like Completed; the hub's total at load is a hint.
    const cancelledAtLoad = stats.by_status ? stats.by_status.cancelled : undefined;
    $("cancelled-hour").title = typeof cancelledAtLoad === "number"
      ? `${cancelledAtLoad} cancelled in all when the page loaded`
      : "";
    $("dead-count").textContent = state.moreDead
      ? `${stats.dead_letter} at load`
      : String(state.deadLetter.size);
    $("live-status").textContent = state.live === "up" ? "live" : text(state.live);
  }

  // How many of `seen` (key -> timestamp) are from the last hour; older ones go.
  function lastHour(seen, hourAgo) {
    let count = 0;
    for (const [key, at] of seen) {
      if (at < hourAgo) seen.delete(key);
      else count += 1;
    }
    return count;
  }

  function renderAgents() {
    const table = $("agents");
    const withAnalytics = state.analytics !== null;
    table.classList.toggle("no-analytics", !withAnalytics);
    const agents = [...state.agents.values()].sort((a, b) =>
      String(a.agent_id).localeCompare(String(b.agent_id)));
    const rows = agents.map((agent) => {
      const fsm = STATES.has(agent.fsm_state) ? agent.fsm_state : "unknown";
      const stats = withAnalytics ? state.analytics.get(agent.agent_id) : null;
      const row = el(
        "tr",
        { "data-agent-id": agent.agent_id },
        el("td", { class: "id", text: text(agent.agent_id) }),
        el("td", { text: text(agent.name) }),
        el("td", null, el("span", { class: `state state-${fsm}`, text: text(agent.fsm_state) })),
        el("td", { class: "id", text: text(agent.current_task_id) }),
        el("td", null, ...chips(agent.flags, "flag", text)),
        el("td", null, ...chips(agent.capabilities, "cap", capName)),
        el("td", { text: clock(agent.connected_at), title: new Date(agent.connected_at || 0).toString() }),
        el("td", { class: "analytics num", text: String(analyticsValue(stats, "tasks_completed")) }),
        el("td", { class: "analytics num", text: String(analyticsValue(stats, "messages_sent")) }),
        el("td", { class: "analytics num", text: String(analyticsValue(stats, "messages_received")) }),
      );
      return row;
    });
    replaceRows(table.tBodies[0], rows);
    $("agents-empty").hidden = rows.length > 0;
  }

  function progressBar(known) {
    const value = typeof known.progress === "number" ? known.progress : null;
    const fill = el("div", { class: "fill" });
    fill.style.width = `${value === null ? 0 : value}%`;
    return el(
      "div",
      {
        class: "progress",
        role: "progressbar",
        "aria-valuemin": 0,
        "aria-valuemax": 100,
        "aria-valuenow": value === null ? undefined : value,
        "data-progress": value === null ? "" : value,
      },
      fill,
      el("span", { class: "label", text: value === null ? "" : `${Math.round(value)}%` }),
    );
  }

  function laneCell(lane) {
    const known = LANES.includes(lane) ? lane : "unknown";
    return el("td", { class: `lane lane-${known}`, text: text(lane) });
  }

  function byAge(a, b) {
    const at = a.created_at || 0;
    const bt = b.created_at || 0;
    return at - bt || String(a.id).localeCompare(String(b.id));
  }

  function renderWork() {
    const tasks = [...state.tasks.values()].sort(byAge);
    const shown = tasks.slice(0, MAX_ROWS);
    const rows = shown.map((known) => {
      let status = known.status || "queued";
      if (status === "assigned" && known.accepted) status = "assigned, accepted";
      return el(
        "tr",
        { "data-task-id": known.id, "data-status": known.status },
        el("td", { class: "id", text: text(known.id) }),
        el("td", { text: known.description === undefined ? "…" : text(known.description) }),
        laneCell(known.priority),
        el("td", null, ...chips(known.needed_capabilities, "cap", capName)),
        el("td", { text: status }),
        el("td", { class: "id", text: text(known.assigned_to) }),
        ageCell(known.created_at),
        el("td", null, progressBar(known)),
        el("td", null, cancelButton(known.id)),
      );
    });
    const drawn = new Set(shown.map((known) => known.id));
    for (const taskId of cancelButtons.keys()) {
      if (!drawn.has(taskId)) cancelButtons.delete(taskId);
    }
    replaceRows($("work").tBodies[0], rows);
    $("work-empty").hidden = rows.length > 0;
    const hidden = tasks.length - shown.length;
    const more = $("work-more");
    more.hidden = hidden <= 0 && !state.moreTasks;
    more.textContent = state.moreTasks
      ? `Showing the oldest ${shown.length}; the hub holds more than this page loads.`
      : `Showing the oldest ${shown.length}; ${hidden} more not drawn.`;
  }

  function renderDead() {
    const tasks = [...state.deadLetter.values()].sort(byAge);
    const shown = tasks.slice(0, MAX_ROWS);
    const rows = shown.map((known) => {
      const button = el("button", { type: "button", class: "retry", text: "Retry" });
      button.addEventListener("click", () => retry(known.id, button));
      return el(
        "tr",
        { "data-task-id": known.id },
        el("td", { class: "id", text: text(known.id) }),
        el("td", { text: known.description === undefined ? "…" : text(known.description) }),
        laneCell(known.priority),
        el("td", { class: "error-text", text: text(known.last_error) }),
        el("td", { class: "id", text: text(known.last_holder) }),
        ageCell(known.updated_at),
        el("td", null, button),
      );
    });
    replaceRows($("dead").tBodies[0], rows);
    $("dead-empty").hidden = rows.length > 0;
    const more = $("dead-more");
    more.hidden = tasks.length <= shown.length && !state.moreDead;
    more.textContent = `Showing the oldest ${shown.length} of ${tasks.length}${state.moreDead ? "+" : ""}.`;
  }

  function renderFeed() {
    const items = state.feed.slice().reverse().map((event) => {
      const details = [];
      for (const [key, value] of Object.entries(event)) {
        if (key === "id" || key === "type" || key === "timestamp" || value === null) continue;
        details.push(`${key}=${text(value)}`);
      }
      return el(
        "li",
        { "data-type": event.type },
        el("span", { class: "time", text: clock(event.timestamp) }),
        el("span", { class: "type", text: text(event.type) }),
        el("span", { class: "mono", text: details.join(" ") }),
      );
    });
    $("feed").replaceChildren(...items);
  }

  function renderMessages() {
    const channelsBody = $("channels").tBodies[0];
    const channelsNote = $("channels-note");
    if (state.channels === null) {
      replaceRows(channelsBody, []);
      channelsNote.hidden = false;
      channelsNote.textContent = "Channels are not readable with this token.";
    } else {
      replaceRows(channelsBody, state.channels.map((channel) => el(
        "tr",
        null,
        el("td", { class: "mono", text: `#${text(channel.name)}` }),
        el("td", { text: text(channel.description) }),
        el("td", { class: "num", text: text(channel.subscriber_count) }),
        el("td", { text: text(channel.created_by) }),
      )));
      channelsNote.hidden = state.channels.length > 0;
      channelsNote.textContent = "No channels.";
    }
    const list = $("messages");
    const note = $("messages-note");
    if (state.messages === null) {
      list.replaceChildren();
      note.hidden = false;
      note.textContent = "Messages are not readable with this token.";
      return;
    }
    list.replaceChildren(...state.messages.slice().reverse().map((message) => {
      const target = message.channel ? `#${message.channel}` : message.to ? message.to : "everyone";
      return el(
        "li",
        null,
        el("span", { class: "time", text: clock(message.timestamp) }),
        el("span", { class: "mono", text: `${text(message.from)} → ${target}` }),
        " ",
        el("span", { text: message.live ? "" : `${text(message.type)}: ${text(message.payload).slice(0, 200)}` }),
      );
    }));
    note.hidden = state.messages.length > 0;
    note.textContent = "No messages in the last hour.";
  }

  function renderChart() {
    const canvas = $("chart");
    const ctx = canvas.getContext("2d");
    if (!ctx) return;
    const width = canvas.width;
    const height = canvas.height;
    const pad = { left: 36, right: 40, top: 10, bottom: 22 };
    const plotW = width - pad.left - pad.right;
    const plotH = height - pad.top - pad.bottom;
    const now = Date.now();
    const start = now - HOUR_MS;

    const perMinute = new Array(60).fill(0);
    for (const at of state.completed.values()) {
      const slot = Math.floor((at - start) / MINUTE_MS);
      if (slot >= 0 && slot < 60) perMinute[slot] += 1;
    }
    const depth = state.depth.filter(([at]) => at >= start);
    const maxDone = Math.max(1, ...perMinute);
    const maxDepth = Math.max(1, ...depth.map(([, value]) => value));

    ctx.clearRect(0, 0, width, height);
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = "#667085";
    ctx.strokeStyle = "#dde1e8";
    ctx.beginPath();
    ctx.moveTo(pad.left, pad.top + plotH + 0.5);
    ctx.lineTo(pad.left + plotW, pad.top + plotH + 0.5);
    ctx.stroke();
    ctx.textAlign = "right";
    ctx.fillText(String(maxDone), pad.left - 4, pad.top + 10);
    ctx.fillText("0", pad.left - 4, pad.top + plotH);
    ctx.textAlign = "left";
    ctx.fillText(String(maxDepth), pad.left + plotW + 4, pad.top + 10);
    ctx.textAlign = "center";
    for (let minutes = 60; minutes >= 0; minutes -= 15) {
      const x = pad.left + plotW * (1 - minutes / 60);
      ctx.fillText(minutes === 0 ? "now" : `-${minutes}m`, x, height - 6);
    }

    ctx.fillStyle = "#2e9d5b";
    const barW = plotW / 60;
    perMinute.forEach((count, slot) => {
      if (!count) return;
      const barH = (count / maxDone) * plotH;
      ctx.fillRect(pad.left + slot * barW + 1, pad.top + plotH - barH, Math.max(1, barW - 2), barH);
    });

    if (depth.length) {
      ctx.strokeStyle = "#2f6fde";
      ctx.lineWidth = 2;
      ctx.beginPath();
      depth.forEach(([at, value], index) => {
        const x = pad.left + ((at - start) / HOUR_MS) * plotW;
        const y = pad.top + plotH - (value / maxDepth) * plotH;
        if (index === 0) ctx.moveTo(x, y);
        else {
          ctx.lineTo(x, pad.top + plotH - (depth[index - 1][1] / maxDepth) * plotH);
          ctx.lineTo(x, y);
        }
      });
      const last = depth[depth.length - 1];
      const lastY = pad.top + plotH - (last[1] / maxDepth) * plotH;
      ctx.lineTo(pad.left + plotW, lastY);
      ctx.stroke();
      ctx.lineWidth = 1;
      ctx.fillStyle = "#2f6fde";
      ctx.beginPath();
      ctx.arc(pad.left + plotW, lastY, 3, 0, 2 * Math.PI);
      ctx.fill();
    }

    $("chart-note").textContent = state.loadedAt > start
      ? `Drawn from the events this page has seen since it opened at ${clock(state.loadedAt)}; before that the chart is empty.`
      : "Drawn from the events this page has seen.";
  }

  // Ages and the chart move with the clock, from what the page holds.
  function tick() {
    for (const cell of document.querySelectorAll("[data-since]")) {
      cell.textContent = age(Number(cell.dataset.since));
    }
    if (state.pendingSample) sampleDepth(true);
  }

  // --- actions ------------------------------------------------------------------

  function say(node, message, isError) {
    node.textContent = message;
    node.classList.toggle("error", Boolean(isError));
    node.hidden = false;
  }

  async function retry(taskId, button) {
    const message = $("dead-message");
    button.disabled = true;
    try {
      await api("POST", `/api/tasks/${encodeURIComponent(taskId)}/retry`);
      say(message, `Task ${taskId} is back in its lane.`, false);
      applyEvent({ type: "task_requeued", task_id: taskId, timestamp: Date.now() });
    } catch (error) {
      button.disabled = false;
      if (error instanceof ApiError && error.status === 403) {
        say(message, `Not allowed: this token may not retry tasks (a viewer token only reads). Use an admin token, or the token of the agent that submitted ${taskId}.`, true);
      } else if (error instanceof ApiError && error.status === 404) {
        say(message, `Not allowed or gone: ${taskId} is not in the dead letter for this token (an agent token retries only the tasks it submitted).`, true);
      } else if (error instanceof ApiError && error.status === 401) {
        askForToken("The hub refused this token.");
      } else {
        say(message, `Retry of ${taskId} failed: ${error.message}`, true);
      }
    }
  }

  // Two clicks cancel a task: the first turns the button into "Confirm
  // cancel" for CONFIRM_MS, the second sends the request. No window.confirm:
  // it blocks the page (and the event stream) while it is open.
  function cancelButton(taskId) {
    const known = cancelButtons.get(taskId);
    if (known) return known;
    const button = el("button", { type: "button", class: "cancel", text: "Cancel" });
    let confirmTimer = null;
    const settle = (label) => {
      window.clearTimeout(confirmTimer);
      confirmTimer = null;
      button.textContent = label;
      button.classList.remove("confirm");
    };
    button.addEventListener("click", () => {
      if (confirmTimer === null) {
        button.textContent = "Confirm cancel";
        button.classList.add("confirm");
        confirmTimer = window.setTimeout(() => settle("Cancel"), CONFIRM_MS);
        return;
      }
      settle("Cancelling…");
      cancel(taskId, button);
    });
    cancelButtons.set(taskId, button);
    return button;
  }

  async function cancel(taskId, button) {
    const message = $("work-message");
    const reason = $("cancel-reason").value.trim();
    button.disabled = true;
    try {
      const reply = await api(
        "POST",
        `/api/tasks/${encodeURIComponent(taskId)}/cancel`,
        reason ? { reason } : undefined,
      );
      say(message, `Task ${taskId} is cancelled (it was ${text(reply.previous_status)}).`, false);
      // The task_cancelled event says the same; this page need not wait for it.
      forgetCancelled(taskId, Date.now());
    } catch (error) {
      const finished = error instanceof ApiError && error.status === 409 && error.data
        ? error.data.status
        : undefined;
      if (typeof finished === "string") {
        // The hub is past this row: the button says what the task became
        // until the stream's event takes the row away.
        const words = FINISHED_WORDS[finished] || text(finished);
        button.textContent = `Already ${words}`;
        say(message, `Not cancelled: task ${taskId} is already ${words}.`, true);
        return;
      }
      button.disabled = false;
      button.textContent = "Cancel";
      if (error instanceof ApiError && error.status === 403) {
        say(message, `Not allowed: this token may not cancel ${taskId} (a viewer token only reads; an agent token cancels only the tasks it submitted). Use an admin token or the submitter's.`, true);
      } else if (error instanceof ApiError && error.status === 404) {
        say(message, `Gone: ${taskId} is not a task this token can see.`, true);
      } else if (error instanceof ApiError && error.status === 401) {
        askForToken("The hub refused this token.");
      } else {
        say(message, `Cancel of ${taskId} failed: ${error.message}`, true);
      }
    }
  }

  async function submitTask(event) {
    event.preventDefault();
    const message = $("submit-message");
    const capabilities = $("submit-capabilities").value.split(",").map((cap) => cap.trim()).filter(Boolean);
    const body = {
      description: $("submit-description").value,
      priority: $("submit-priority").value,
      needed_capabilities: capabilities,
    };
    const retries = $("submit-retries").value.trim();
    if (retries !== "") body.max_retries = Number(retries);
    try {
      const reply = await api("POST", "/api/tasks", body);
      say(message, `Queued ${reply.task_id} in ${reply.priority}.`, false);
      $("submit-description").value = "";
    } catch (error) {
      if (error instanceof ApiError && error.status === 403) {
        say(message, "Not allowed: this token may not submit tasks (a viewer token only reads).", true);
      } else if (error instanceof ApiError && error.status === 401) {
        askForToken("The hub refused this token.");
      } else {
        say(message, `Not queued: ${error instanceof ApiError ? error.error : error.message}`, true);
      }
    }
  }

  // --- start --------------------------------------------------------------------

  function open(token) {
    state.token = token;
    state.loadedAt = null;
    $("token-panel").hidden = true;
    notice("");
    startStream();
  }

  function main() {
    $("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const token = $("token-input").value.trim();
      if (!token) return;
      $("token-input").value = "";
      keepToken(token);
      open(token);
    });
    $("change-token").addEventListener("click", () => {
      keepToken(null);
      state.token = null;
      askForToken("");
    });
    $("submit-form").addEventListener("submit", submitTask);
    window.setInterval(tick, 1000);
    window.setInterval(() => schedule("chart", "header"), 15000);

    const linked = tokenFromAddress();
    if (linked) keepToken(linked);
    const token = linked || storedToken();
    if (token) open(token);
    else askForToken("");
  }

  main();
})();
