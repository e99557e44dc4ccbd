// The netsupervisor status page: polls /connections and /breakers, and draws
// the circuit breakers and a table of the connections.
//
// Every value from the server is put in the page with textContent, or as an
// attribute value (title, data-*), never parsed as HTML: an error text or a
// label value containing markup shows as text. The page's
// Content-Security-Policy (see docs/admin-api.md) enforces the same.
"use strict";

(function () {
  const STATES = ["IDLE", "CONNECTING", "ESTABLISHED", "CLOSING", "CLOSED"];
  const BREAKER_STATES = ["closed", "open", "half_open"];
  // What holds an IDLE connection back from its next attempt ("held").
  const HELD = {
    backoff: "waiting for its backoff delay",
    breaker: "held by its target's circuit breaker",
    budget: "waiting for a token of the connect budget",
    flapping: "held by the flap guard (it kept being lost)",
  };
  // Unhealthy first: waiting to retry, trying, closing, closed; then the good ones.
  const RANK = { IDLE: 0, CONNECTING: 1, CLOSING: 2, CLOSED: 3, ESTABLISHED: 4 };
  const REFRESH_MS = 2000;
  const TIMEOUT_MS = 5000;
  const MAX_ROWS = 500;
  const MAX_TARGETS = 20;
  const TIMELINE = 5;
  // Relative, so that the page also works behind a proxy under a sub-path.
  const SOURCE = "connections?transitions=" + TIMELINE;
  const BREAKERS = "breakers";

  let connections = [];
  let breakers = {};
  let clockOffset = 0; // server clock minus this browser's clock, in seconds
  let lastSuccess = null; // Date of the last good answer
  let failingSince = null; // Date of the first failure of the current outage
  let failure = "";
  let ages = []; // [element, server time, prefix, suffix]: updated every second

  const byId = (id) => document.getElementById(id);

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) {
      node.className = className;
    }
    if (text !== undefined && text !== null) {
      node.textContent = String(text);
    }
    return node;
  }

  function stateClass(state) {
    return STATES.includes(state) ? "s-" + state.toLowerCase() : "s-unknown";
  }

  function breakerClass(state) {
    return BREAKER_STATES.includes(state) ? "b-" + state.replace("_", "-") : "b-unknown";
  }

  function breakerName(state) {
    return String(state).replace("_", "-");
  }

  function serverNow() {
    return Date.now() / 1000 + clockOffset;
  }

  function duration(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    const d = Math.floor(seconds / 86400);
    const h = Math.floor((seconds % 86400) / 3600);
    const m = Math.floor((seconds % 3600) / 60);
    const s = seconds % 60;
    const two = (n) => String(n).padStart(2, "0");
    if (d > 0) return d + "d " + two(h) + "h";
    if (h > 0) return h + "h " + two(m) + "m";
    if (m > 0) return m + "m " + two(s) + "s";
    return s + "s";
  }

  function clockTime(date) {
    return date.toLocaleTimeString([], { hour12: false });
  }

  function serverClockTime(unixSeconds) {
    // A server time shown in this browser's time zone, corrected for the offset.
    return clockTime(new Date((unixSeconds - clockOffset) * 1000));
  }

  function rtt(seconds) {
    if (typeof seconds !== "number") return "—";
    const ms = seconds * 1000;
    return (ms < 10 ? ms.toFixed(2) : ms < 100 ? ms.toFixed(1) : ms.toFixed(0)) + " ms";
  }

  function labelText(labels) {
    return Object.keys(labels || {})
      .sort()
      .map((k) => k + "=" + labels[k])
      .join(" ");
  }

  function haystack(c) {
    const endpoints = (c.endpoints || [c.endpoint]).join("\n");
    return [c.name, c.state, c.held || "", endpoints, c.protocol, c.last_error || "",
      labelText(c.labels)]
      .join("\n")
      .toLowerCase();
  }

  // --- drawing ------------------------------------------------------------

  function drawSummary(all) {
    const counts = {};
    for (const s of STATES) counts[s] = 0;
    for (const c of all) counts[c.state] = (counts[c.state] || 0) + 1;
    const items = [];
    const total = el("li", "total");
    total.append(el("span", "count", all.length), el("span", "name", "connections"));
    items.push(total);
    for (const s of STATES) {
      const li = el("li", "legend-item " + stateClass(s) + (counts[s] ? "" : " zero"));
      li.dataset.state = s;
      li.append(el("span", "swatch"), el("span", "count", counts[s]), el("span", "name", s));
      items.push(li);
    }
    byId("summary").replaceChildren(...items);
  }

  function drawBreakers(answer) {
    // Counts by state, then each open or half-open target (the first few).
    const items = [];
    const counts = BREAKER_STATES.map((s) => Number(answer[s]) || 0);
    const total = el("li", "total");
    total.append(
      el("span", "count", counts.reduce((a, b) => a + b, 0)),
      el("span", "name", "breakers"),
    );
    items.push(total);
    BREAKER_STATES.forEach((s, i) => {
      const li = el("li", "legend-item " + breakerClass(s) + (counts[i] ? "" : " zero"));
      li.dataset.state = s;
      li.append(el("span", "swatch"), el("span", "count", counts[i]), el("span", "name", breakerName(s)));
      items.push(li);
    });
    const notClosed = Array.isArray(answer.not_closed) ? answer.not_closed : [];
    for (const b of notClosed.slice(0, MAX_TARGETS)) {
      const li = el("li", "target " + breakerClass(b.state));
      li.dataset.state = b.state;
      li.append(
        el("span", "badge " + breakerClass(b.state), breakerName(b.state)),
        el("span", "target-name", b.target),
        el("span", "target-held", b.held + " of " + b.members + " held"),
      );
      li.title = "breaker of " + b.scope + " " + b.target + ": " + breakerName(b.state) +
        ", " + b.held + " of its " + b.members + " connections held";
      items.push(li);
    }
    if (notClosed.length > MAX_TARGETS) {
      items.push(el("li", "more", "+" + (notClosed.length - MAX_TARGETS) + " more at /breakers"));
    }
    byId("breakers").replaceChildren(...items);
  }

  function ageCell(cls, since, prefix, suffix) {
    const node = el("span", cls);
    ages.push([node, since, prefix, suffix || ""]);
    showAge(node, since, prefix, suffix || "", serverNow());
    return node;
  }

  function showAge(node, since, prefix, suffix, now) {
    node.textContent = prefix + duration(now - since) + suffix;
  }

  function drawTimeline(transitions) {
    const list = el("ol", "timeline");
    for (const t of transitions || []) {
      const chip = el("li", "chip " + stateClass(t.to));
      chip.append(el("span", "chip-to", t.to), el("span", "chip-reason", t.reason));
      chip.append(ageCell("chip-age", t.time, "", " ago"));
      chip.title =
        t.from + " → " + t.to + " (" + t.reason + ") at " + serverClockTime(t.time);
      list.append(chip);
    }
    return list;
  }

  function drawRow(c) {
    const tr = el("tr", stateClass(c.state));
    tr.dataset.name = c.name;
    tr.dataset.state = c.state;

    const name = el("td", "name");
    name.append(el("div", "conn-name", c.name));
    // With several endpoints: the one in use, which of them it is, and all in the tooltip.
    const endpoints = c.endpoints || [c.endpoint];
    const which = endpoints.length > 1
      ? " (" + (endpoints.indexOf(c.endpoint) + 1) + " of " + endpoints.length + ")"
      : "";
    const endpoint = el("div", "endpoint", c.protocol + " · " + c.endpoint + which);
    endpoint.title = endpoints.join("\n");
    name.append(endpoint);
    tr.append(name);

    const state = el("td", "state");
    state.append(el("span", "badge " + stateClass(c.state), c.state));
    if (c.held) {
      const known = Object.prototype.hasOwnProperty.call(HELD, c.held);
      const held = el("span", "held " + (known ? "h-" + c.held : "h-unknown"), c.held);
      held.title = known ? HELD[c.held] : "held";
      if (c.held === "breaker" && c.breaker) {
        held.title += " (" + breakerName(c.breaker) + ")";
      }
      state.append(held);
    }
    if (c.queue_depth > 0) {
      const queued = el("div", "queued", c.queue_depth + " queued");
      queued.title = c.queue_depth + " operations wait for this connection";
      state.append(queued);
    }
    tr.append(state);

    const inState = el("td", "num");
    inState.append(ageCell("age", c.since, ""));
    inState.title = "since " + serverClockTime(c.since);
    tr.append(inState);

    const attempts = el("td", "num", c.attempts);
    if (c.consecutive_failures) {
      attempts.append(el("div", "failures", c.consecutive_failures + " failing"));
    }
    attempts.title = c.consecutive_failures + " consecutive failures";
    tr.append(attempts);

    tr.append(el("td", "num rtt", rtt(c.rtt_seconds)));

    const error = el("td", "error");
    if (c.last_error) {
      const text = el("div", "error-text", c.last_error);
      text.title = c.last_error;
      error.append(text);
    } else {
      error.append(el("span", "none", "—"));
    }
    if (c.state === "IDLE" && c.backoff_delay_seconds > 0) {
      error.append(el("div", "retry", "backoff " + c.backoff_delay_seconds.toFixed(1) + " s"));
    }
    tr.append(error);

    const labels = el("td", "labels");
    for (const key of Object.keys(c.labels || {}).sort()) {
      const label = el("span", "label");
      label.append(el("span", "label-key", key + "="), el("span", "label-value", c.labels[key]));
      labels.append(label);
    }
    tr.append(labels);

    const timeline = el("td", "transitions");
    timeline.append(drawTimeline(c.transitions));
    tr.append(timeline);
    return tr;
  }

  function draw() {
    ages = [];
    drawSummary(connections);
    drawBreakers(breakers);
    const needle = byId("filter").value.trim().toLowerCase();
    const matching = connections
      .map((c, index) => [c, index])
      .filter(([c]) => !needle || haystack(c).includes(needle))
      .sort(([a, i], [b, j]) => (RANK[a.state] ?? -1) - (RANK[b.state] ?? -1) || i - j);
    const rows = matching.slice(0, MAX_ROWS).map(([c]) => drawRow(c));
    byId("rows").replaceChildren(...rows);
    byId("empty").hidden = rows.length > 0 || connections.length === 0;
    let shown = "showing " + rows.length + " of " + matching.length;
    if (matching.length !== connections.length) {
      shown += " matching (" + connections.length + " in all)";
    }
    if (matching.length > rows.length) {
      shown += " — refine the filter to see the others";
    }
    byId("shown").textContent = shown;
  }

  function tick() {
    const now = serverNow();
    for (const [node, since, prefix, suffix] of ages) {
      showAge(node, since, prefix, suffix, now);
    }
    drawStatus();
  }

  function drawStatus() {
    const refreshed = byId("refreshed");
    const banner = byId("banner");
    if (lastSuccess) {
      refreshed.textContent = "refreshed " + clockTime(lastSuccess);
    }
    if (failingSince) {
      document.body.classList.add("stale");
      let text = "Admin API unreachable since " + clockTime(failingSince) + " (" + failure + ")";
      text += lastSuccess
        ? ": the table shows data from " + clockTime(lastSuccess) + " (" +
          duration((Date.now() - lastSuccess) / 1000) + " ago)."
        : ": no data yet.";
      banner.textContent = text;
      banner.hidden = false;
    } else {
      document.body.classList.remove("stale");
      banner.hidden = true;
    }
  }

  // --- fetching -----------------------------------------------------------

  function showShard(header) {
    // "I/N" when the process keeps one shard of a larger configuration.
    const found = /^(\d+)\/(\d+)$/.exec(header || "");
    const shard = byId("shard");
    shard.hidden = !found || found[2] === "1";
    shard.textContent = found ? "· shard " + found[1] + "/" + found[2] : "";
  }

  function learnClock(response, sentAt, receivedAt) {
    // The server's own clock (the reactor's seconds) when it answered, else its Date header.
    const local = (sentAt + receivedAt) / 2000;
    const precise = parseFloat(response.headers.get("Netsupervisor-Time"));
    if (Number.isFinite(precise)) {
      clockOffset = precise - local;
      return;
    }
    const date = Date.parse(response.headers.get("Date") || "");
    if (Number.isFinite(date)) {
      clockOffset = date / 1000 + 0.5 - local;
    }
  }

  async function refresh() {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), TIMEOUT_MS);
    const sentAt = Date.now();
    const get = async (url) => {
      const response = await fetch(url, {
        headers: { Accept: "application/json" },
        cache: "no-store",
        signal: controller.signal,
      });
      if (!response.ok) {
        throw new Error("HTTP " + response.status);
      }
      return [response, await response.json()];
    };
    try {
      const [[response, body], [, breakerBody]] = await Promise.all([get(SOURCE), get(BREAKERS)]);
      if (!Array.isArray(body) || breakerBody === null || typeof breakerBody !== "object") {
        throw new Error("unexpected answer");
      }
      learnClock(response, sentAt, Date.now());
      showShard(response.headers.get("Netsupervisor-Shard"));
      connections = body;
      breakers = breakerBody;
      lastSuccess = new Date();
      failingSince = null;
      draw();
    } catch (e) {
      failure = e && e.name === "AbortError" ? "timed out" : String((e && e.message) || e);
      if (!failingSince) {
        failingSince = new Date();
      }
    } finally {
      clearTimeout(timer);
      drawStatus();
      setTimeout(refresh, REFRESH_MS);
    }
  }

  function start() {
    byId("filter").addEventListener("input", draw);
    drawSummary([]);
    drawBreakers({});
    setInterval(tick, 1000);
    refresh();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
