"use strict";
// Plain JS, no build step: the overview's live rows (server-sent events), the stream
// timeline (one fetch), and an episode page that reloads itself until its clip is written.
// Every value comes from this server's JSON.
const history = {};
function fmt(v) { return v === null || v === undefined ? "–" : Number(v).toPrecision(4); }
function drawSeries(canvas, values, levels, marks) {
  const ctx = canvas.getContext("2d"), w = canvas.width, h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  const all = values.concat(levels).filter((v) => v !== null);
  if (!all.length) return;
  const top = Math.max(...all) * 1.1 || 1, x = (i) => (i / Math.max(1, values.length - 1)) * w;
  const y = (v) => h - (v / top) * h;
  (marks || []).forEach((m) => { ctx.strokeStyle = m.type === "raise" ? "#c0392b" : "#2a8a3e";
    ctx.beginPath(); ctx.moveTo(x(m.i), 0); ctx.lineTo(x(m.i), h); ctx.stroke(); });
  ctx.setLineDash([4, 3]); ctx.strokeStyle = "#999";
  levels.forEach((l) => { if (l === null) return; ctx.beginPath(); ctx.moveTo(0, y(l)); ctx.lineTo(w, y(l)); ctx.stroke(); });
  ctx.setLineDash([]); ctx.strokeStyle = "#1f5fa8"; ctx.beginPath();
  values.forEach((v, i) => { if (i) ctx.lineTo(x(i), y(v)); else ctx.moveTo(x(i), y(v)); });
  ctx.stroke();
}
function overview() {
  const source = new EventSource("/api/live");
  source.onmessage = (msg) => {
    const data = JSON.parse(msg.data);
    document.getElementById("mqtt").textContent = data.mqtt;
    document.getElementById("outbox").textContent = data.outbox;
    document.getElementById("provider").textContent = data.provider;
    document.getElementById("episodes").textContent = data.episodes;
    data.streams.forEach((s) => {
      const row = document.querySelector(`tr[data-stream="${CSS.escape(s.name)}"]`);
      if (!row) return;
      const state = row.querySelector(".state");
      state.textContent = s.label; state.className = "state " + s.state.replace(" ", "-");
      row.querySelector(".score").textContent = fmt(s.score);
      row.querySelector(".threshold").textContent = fmt(s.threshold);
      const trouble = Object.entries(s.capture).filter(([, v]) => v).map(([k, v]) => `${k} ${v}`);
      row.querySelector(".capture").textContent =
        (s.connected ? "connected" : "disconnected") + ", " + (trouble.join(", ") || "clean");
      const series = (history[s.name] = history[s.name] || []);
      if (s.score !== null) { series.push(s.score); if (series.length > 120) series.shift(); }
      drawSeries(row.querySelector("canvas"), series, [s.threshold, s.clear_threshold]);
    });
  };
}
async function stream() {
  const canvas = document.getElementById("timeline"), hours = document.getElementById("hours");
  const load = async () => {
    const url = `/api/streams/${encodeURIComponent(canvas.dataset.stream)}/timeline?hours=${hours.value}`;
    const data = await (await fetch(url)).json();
    const marks = data.marks.map((m) => ({ type: m.type, i: data.t.findIndex((t) => t >= m.t) }))
      .filter((m) => m.i >= 0);
    drawSeries(canvas, data.score, [data.threshold, data.clear_threshold], marks);
  };
  hours.addEventListener("change", load); await load(); setInterval(load, 10000);
}
document.addEventListener("DOMContentLoaded", () => {
  const page = document.body.dataset.page;
  if (page === "overview") overview();
  if (page === "stream") stream();
  // an episode whose clip is still being recorded (post-roll): look again shortly
  if (page === "episode" && document.getElementById("clip-pending")) {
    setTimeout(() => location.reload(), 2000);
  }
});
