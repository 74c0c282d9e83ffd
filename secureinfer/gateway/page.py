"""The status page: plain HTML and a little JavaScript that reloads `status.json` every few seconds and redraws the
nodes, the committees and their models, and the recent requests per mode. No build step, no outside resources; every
value is written as text (never as HTML), so a node's name cannot inject markup."""

from __future__ import annotations

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>secureinfer network status</title>
<style>
  :root { --ink: #1d2430; --muted: #6b7383; --line: #e3e6ec; --up: #1f8a4c; --down: #c0392b; --warn: #b7791f;
          --panel: #ffffff; --bg: #f4f6f9; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink);
         background: var(--bg); }
  header { padding: 18px 28px 8px; display: flex; align-items: baseline; gap: 18px; flex-wrap: wrap; }
  h1 { font-size: 20px; margin: 0; }
  h2 { font-size: 15px; margin: 0 0 10px; }
  .muted { color: var(--muted); }
  main { padding: 0 28px 28px; display: grid; gap: 16px; }
  .tiles { display: grid; grid-template-columns: repeat(auto-fit, minmax(160px, 1fr)); gap: 12px; }
  .tile, section { background: var(--panel); border: 1px solid var(--line); border-radius: 8px; padding: 12px 16px; }
  .tile b { display: block; font-size: 22px; }
  table { width: 100%; border-collapse: collapse; }
  th, td { text-align: left; padding: 6px 8px; border-top: 1px solid var(--line); vertical-align: top; }
  th { color: var(--muted); font-weight: 600; border-top: none; font-size: 12px; text-transform: uppercase; }
  td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
  .badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600;
           color: #fff; }
  .up { background: var(--up); } .down { background: var(--down); } .unhealthy { background: var(--warn); }
  .chip { display: inline-block; padding: 0 6px; margin: 1px 2px; border-radius: 4px; border: 1px solid var(--line);
          font-size: 12px; }
  .chip.down { color: #fff; border-color: var(--down); }
  #error { display: none; background: #fdecea; border: 1px solid #f5c2bd; color: var(--down); padding: 8px 12px;
           border-radius: 6px; }
</style>
</head>
<body data-refresh-ms="__REFRESH_MS__">
<header>
  <h1>secureinfer network</h1>
  <span class="muted" id="gateway"></span>
  <span class="muted">updated <span id="updated">never</span></span>
</header>
<main>
  <div id="error"></div>
  <div class="tiles">
    <div class="tile"><span class="muted">nodes up</span><b id="tile-nodes">-</b></div>
    <div class="tile"><span class="muted">committees up</span><b id="tile-committees">-</b></div>
    <div class="tile"><span class="muted">hosted models</span><b id="tile-models">-</b></div>
    <div class="tile"><span class="muted">secure requests</span><b id="tile-secure">-</b></div>
    <div class="tile"><span class="muted">plaintext requests</span><b id="tile-plaintext">-</b></div>
  </div>
  <section><h2>Nodes</h2><table id="nodes"><thead><tr>
    <th>node</th><th>operator</th><th>address</th><th>roles</th><th>device</th><th class="num">GFLOP/s</th>
    <th class="num">CPUs</th><th class="num">memory GiB</th><th>health</th><th>hosts</th><th class="num">seen</th>
  </tr></thead><tbody></tbody></table></section>
  <section><h2>Committees and the models they host</h2><table id="committees"><thead><tr>
    <th>committee</th><th>mode</th><th>nodes</th><th>models</th><th>state</th>
  </tr></thead><tbody></tbody></table></section>
  <section><h2>Models</h2><table id="models"><thead><tr>
    <th>model</th><th>arch</th><th>modes</th><th>endpoints</th><th class="num">context</th><th>tokenizer</th>
    <th>owner</th>
  </tr></thead><tbody></tbody></table></section>
  <section><h2>Requests by mode</h2><table id="modes"><thead><tr>
    <th>mode</th><th class="num">requests</th><th class="num">failed</th><th class="num">mean s</th>
    <th class="num">median s</th><th class="num">max s</th>
  </tr></thead><tbody></tbody></table></section>
  <section><h2>Recent requests</h2><table id="recent"><thead><tr>
    <th>time</th><th>endpoint</th><th>model</th><th>mode</th><th>status</th><th class="num">latency s</th>
    <th class="num">tokens in / out</th><th>committee</th><th>strategy</th>
  </tr></thead><tbody></tbody></table></section>
</main>
<script>
"use strict";
const refreshMs = Number(document.body.dataset.refreshMs) || 2000;
const fmt = (x, digits) => (x === null || x === undefined) ? "-" : Number(x).toFixed(digits);
const clock = (t) => new Date(t * 1000).toLocaleTimeString();

function cell(row, value, cls) {
  const td = document.createElement("td");
  if (value instanceof Node) { td.appendChild(value); } else { td.textContent = value; }
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}
function badge(text, cls) {
  const span = document.createElement("span");
  span.className = "badge " + cls;
  span.textContent = text;
  return span;
}
function chips(items, downSet) {
  const box = document.createElement("span");
  for (const item of [...items].sort()) {
    if (box.childNodes.length) box.appendChild(document.createTextNode(" "));
    const chip = document.createElement("span");
    chip.className = "chip" + (downSet && downSet.has(item) ? " down badge" : "");
    chip.textContent = item;
    box.appendChild(chip);
  }
  return box;
}
function fill(id, rows, draw) {
  const body = document.querySelector("#" + id + " tbody");
  body.replaceChildren();
  for (const item of rows) {
    const row = document.createElement("tr");
    draw(row, item);
    body.appendChild(row);
  }
}

function render(data) {
  const error = document.getElementById("error");
  error.style.display = data.error ? "block" : "none";
  error.textContent = data.error || "";
  const gw = data.gateway || {};
  document.getElementById("gateway").textContent =
    "as " + gw.client + " via " + (gw.seeds || []).join(", ") + " - " + gw.in_flight + " request(s) running";
  document.getElementById("updated").textContent = clock(data.time);
  const down = new Set(data.nodes.filter(n => n.health !== "up").map(n => n.node_id));
  fill("nodes", data.nodes, (row, n) => {
    row.dataset.node = n.node_id;
    row.dataset.health = n.health;
    cell(row, n.node_id); cell(row, n.operator || "-"); cell(row, n.address); cell(row, n.roles.join(", "));
    cell(row, n.device); cell(row, fmt(n.gflops, 1), "num"); cell(row, n.cpus, "num");
    cell(row, fmt(n.memory_gib, 1), "num"); cell(row, badge(n.health, n.health)); cell(row, chips(n.models));
    cell(row, n.health === "down" ? fmt(n.seen_s_ago, 0) + " s ago" : "now", "num");
  });
  fill("committees", data.committees, (row, c) => {
    row.dataset.committee = c.committee_id;
    cell(row, c.committee_id); cell(row, c.mode === "secret" ? "secure (3 parties)" : "plaintext worker");
    const state = c.up ? "up" : "down";
    cell(row, chips(c.nodes, down)); cell(row, chips(c.models)); cell(row, badge(state, state));
  });
  fill("models", data.models, (row, m) => {
    row.dataset.model = m.id;
    cell(row, m.id); cell(row, m.arch || "-"); cell(row, m.modes.length ? m.modes.join(", ") : "none up");
    cell(row, m.endpoints.join(", ")); cell(row, m.context_length ?? "-", "num"); cell(row, m.tokenizer || "-");
    cell(row, m.owned_by);
  });
  const modes = data.requests.by_mode;
  fill("modes", Object.keys(modes), (row, mode) => {
    const s = modes[mode];
    cell(row, mode); cell(row, s.requests, "num"); cell(row, s.failed, "num"); cell(row, fmt(s.mean_s, 2), "num");
    cell(row, fmt(s.median_s, 2), "num"); cell(row, fmt(s.max_s, 2), "num");
  });
  fill("recent", data.requests.recent, (row, r) => {
    cell(row, clock(r.at)); cell(row, r.endpoint); cell(row, r.model); cell(row, r.mode);
    cell(row, badge(String(r.status), r.status === 200 ? "up" : "down")); cell(row, fmt(r.latency_s, 2), "num");
    cell(row, r.prompt_tokens + " / " + r.completion_tokens, "num"); cell(row, r.committee || "-");
    cell(row, r.strategy || "-");
  });
  const upNodes = data.nodes.filter(n => n.health === "up").length;
  document.getElementById("tile-nodes").textContent = upNodes + " / " + data.nodes.length;
  document.getElementById("tile-committees").textContent =
    data.committees.filter(c => c.up).length + " / " + data.committees.length;
  document.getElementById("tile-models").textContent = data.models.length;
  document.getElementById("tile-secure").textContent = modes.secure.requests;
  document.getElementById("tile-plaintext").textContent = modes.plaintext.requests;
}

async function refresh() {
  try {
    const response = await fetch("status.json" + window.location.search, {cache: "no-store"});
    if (!response.ok) throw new Error("status.json: HTTP " + response.status);
    render(await response.json());
  } catch (err) {
    const error = document.getElementById("error");
    error.style.display = "block";
    error.textContent = "cannot reach the gateway: " + err.message;
  } finally {
    setTimeout(refresh, refreshMs);
  }
}
refresh();
</script>
</body>
</html>
"""


def status_page(refresh_s: float) -> str:
    """The page's HTML, reloading its data every `refresh_s` seconds."""
    return _PAGE.replace("__REFRESH_MS__", str(int(refresh_s * 1000)))
