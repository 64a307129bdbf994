// gearshift dashboard: one EventSource, plain DOM updates, canvas line charts.
"use strict";

const HISTORY = 120; // points kept per series (two minutes at the default interval)
const series = { submitted: [], finished: [], failed: [], wait: [], run: [] };
let previous = null;

const $ = (id) => document.getElementById(id);

function text(tag, value, cls) {
  const el = document.createElement(tag);
  el.textContent = value;
  if (cls) el.className = cls;
  return el;
}

function push(name, value) {
  const s = series[name];
  s.push(value);
  if (s.length > HISTORY) s.shift();
}

function color(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || "#888";
}

function drawChart(canvas, lines) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  let max = 0;
  for (const l of lines) for (const v of l.data) if (v > max) max = v;
  max = max > 0 ? max * 1.15 : 1;
  const left = 40, bottom = h - 16, top = 6, right = w - 6;
  ctx.strokeStyle = color("--line");
  ctx.fillStyle = color("--muted");
  ctx.font = "11px system-ui, sans-serif";
  ctx.lineWidth = 1;
  for (let i = 0; i <= 3; i++) {
    const y = bottom - ((bottom - top) * i) / 3;
    ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(right, y); ctx.stroke();
    const v = (max * i) / 3;
    ctx.fillText(v >= 100 ? v.toFixed(0) : v.toFixed(1), 2, y + 4);
  }
  for (const l of lines) {
    const n = l.data.length;
    if (n < 2) continue;
    ctx.strokeStyle = color(l.color);
    ctx.lineWidth = 2;
    ctx.beginPath();
    l.data.forEach((v, i) => {
      const x = right - ((n - 1 - i) * (right - left)) / (HISTORY - 1);
      const y = bottom - (v / max) * (bottom - top);
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  }
}

function redraw() {
  drawChart($("chart-rate"), [
    { data: series.submitted, color: "--c1" },
    { data: series.finished, color: "--c2" },
    { data: series.failed, color: "--c3" },
  ]);
  drawChart($("chart-latency"), [
    { data: series.wait, color: "--c1" },
    { data: series.run, color: "--c2" },
  ]);
}

function fill(tbody, rows, columns, empty) {
  const frag = document.createDocumentFragment();
  if (rows.length === 0) {
    const tr = document.createElement("tr");
    const td = text("td", empty, "empty");
    td.colSpan = columns;
    tr.appendChild(td);
    frag.appendChild(tr);
  }
  for (const r of rows) frag.appendChild(r);
  tbody.replaceChildren(frag);
}

function age(seconds) {
  if (seconds < 60) return seconds.toFixed(0) + "s";
  if (seconds < 3600) return (seconds / 60).toFixed(0) + "m";
  return (seconds / 3600).toFixed(1) + "h";
}

async function cancelJob(handle) {
  const res = await fetch("/api/jobs/" + encodeURIComponent(handle), { method: "DELETE" });
  const body = await res.json().catch(() => ({}));
  $("message").textContent = res.ok ? "cancelled " + handle : "cancel " + handle + ": " + (body.error || res.status);
}

function render(frame) {
  const s = frame.server;
  $("meta").textContent = "v" + s.version + " · up " + age(s.uptime) + " · " + s.addresses.join(", ") +
    (s.persistent ? " · durable queue" : "");
  let queued = 0, running = 0, workers = 0;
  const frows = frame.functions.map((f) => {
    queued += f.queued; running += f.running; workers += f.workers;
    const tr = document.createElement("tr");
    tr.dataset.function = f.name;
    tr.append(text("td", f.name, "name"), text("td", f.queued, "n queued"), text("td", f.running, "n running"),
      text("td", f.workers, "n workers"), text("td", f.high, "n wide"), text("td", f.normal, "n wide"),
      text("td", f.low, "n wide"));
    return tr;
  });
  fill($("functions").tBodies[0], frows, 7, "no functions yet");
  $("t-queued").textContent = queued;
  $("t-running").textContent = running;
  $("t-workers").textContent = frame.workers_total;
  $("t-conns").textContent = s.connections;
  const c = frame.counters;
  $("t-failed").textContent = c.finished.fail + c.finished.exception;

  const wrows = frame.workers.map((w) => {
    const tr = document.createElement("tr");
    tr.append(text("td", w.fd, "n"), text("td", w.host), text("td", w.client_id),
      text("td", w.identity || "–", "wide"), text("td", w.functions.join(" ")), text("td", w.jobs.length, "n"));
    return tr;
  });
  fill($("workers").tBodies[0], wrows, 6, "no workers connected");

  const now = s.time;
  const jrows = frame.jobs.map((j) => {
    const tr = document.createElement("tr");
    tr.dataset.handle = j.handle;
    const btn = text("button", "cancel");
    btn.addEventListener("click", () => cancelJob(j.handle));
    const cell = document.createElement("td");
    if (j.state !== "ignored") cell.appendChild(btn);
    tr.append(text("td", j.handle), text("td", j.function), text("td", j.state, "state-" + j.state),
      text("td", j.priority, "wide"), text("td", j.retries, "n"),
      text("td", j.created ? age(Math.max(0, now - j.created)) : "–", "n wide"), cell);
    return tr;
  });
  fill($("jobs").tBodies[0], jrows, 7, "no jobs");
  $("jobs-note").textContent = s.jobs > frame.jobs.length ? "(first " + frame.jobs.length + " of " + s.jobs + ")" : "";

  if (previous) {
    const dt = Math.max(0.001, s.time - previous.server.time);
    const p = previous.counters;
    const done = c.finished.complete + c.finished.fail + c.finished.exception;
    const pdone = p.finished.complete + p.finished.fail + p.finished.exception;
    const rate = (done - pdone) / dt;
    push("submitted", (c.submitted - p.submitted) / dt);
    push("finished", rate);
    push("failed", (c.finished.fail + c.finished.exception - p.finished.fail - p.finished.exception) / dt);
    $("t-rate").textContent = rate >= 10 ? rate.toFixed(0) : rate.toFixed(1);
    for (const k of ["wait", "run"]) {
      const a = c.latency[k], b = p.latency[k];
      const n = a && b ? a.count - b.count : 0;
      push(k, n > 0 ? ((a.sum - b.sum) / n) * 1000 : 0);
    }
    redraw();
  }
  previous = frame;
}

function connect() {
  const es = new EventSource("/api/events?interval=1");
  es.addEventListener("open", () => { $("conn").textContent = "live"; $("conn").className = "pill on"; });
  es.addEventListener("error", () => { $("conn").textContent = "reconnecting…"; $("conn").className = "pill off"; });
  es.addEventListener("frame", (ev) => render(JSON.parse(ev.data)));
}

window.addEventListener("resize", redraw);
connect();
