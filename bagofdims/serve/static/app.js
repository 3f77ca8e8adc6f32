// bagofdims browser: index search + sort, the steering stream and the strength sweep. No framework, no build step.
"use strict";

function setupIndex() {
  const table = document.getElementById("features");
  if (!table) return;
  const body = table.tBodies[0];
  const rows = Array.from(body.rows);
  const q = document.getElementById("q");
  const shown = document.getElementById("shown");
  const filter = () => {
    const terms = q.value.toLowerCase().split(/\s+/).filter(Boolean);
    let n = 0;
    for (const r of rows) {
      const hay = r.dataset.search;
      const ok = terms.every((t) => (/^\d+$/.test(t) ? (" " + hay + " ").includes(" " + t + " ") : hay.includes(t)));
      r.hidden = !ok;
      if (ok) n++;
    }
    shown.textContent = n + " of " + rows.length + " shown";
  };
  q.addEventListener("input", filter);
  filter();
  for (const b of table.querySelectorAll("th button")) {
    b.addEventListener("click", () => {
      const key = b.dataset.key, num = b.hasAttribute("data-num");
      const dir = b.getAttribute("aria-sort") === "descending" ? 1 : -1;
      for (const o of table.querySelectorAll("th button")) o.removeAttribute("aria-sort");
      b.setAttribute("aria-sort", dir > 0 ? "ascending" : "descending");
      const val = (r) => (num ? parseFloat(r.dataset[key]) : r.dataset[key]);
      rows.sort((a, c) => {
        let x = val(a), y = val(c);
        if (num) { x = isNaN(x) ? -Infinity : x; y = isNaN(y) ? -Infinity : y; return dir * (x - y); }
        return dir * x.localeCompare(y);
      });
      for (const r of rows) body.appendChild(r);
    });
  }
}

function setupSteer() {
  const out = document.getElementById("steer-out");
  if (!out) return;
  const status = document.getElementById("steer-status");
  const es = new EventSource(out.dataset.stream);
  const text = (id, s) => { const el = document.getElementById(id); if (el) el.textContent = s; };
  es.addEventListener("status", (e) => { status.textContent = JSON.parse(e.data).message; });
  es.addEventListener("prompt", (e) => text("prompt-used", JSON.parse(e.data).prompt));
  es.addEventListener("token", (e) => {
    const d = JSON.parse(e.data);
    document.getElementById("out-" + d.side).textContent += d.text;
  });
  es.addEventListener("mass", (e) => {
    const d = JSON.parse(e.data);
    text("mass-" + d.side, d.mass.toPrecision(3));
  });
  es.addEventListener("ppl", (e) => {
    const d = JSON.parse(e.data);
    text("ppl-" + d.side, d.ppl.toPrecision(4));
  });
  es.addEventListener("end", (e) => {
    const d = JSON.parse(e.data);
    const el = document.getElementById("out-" + d.side);
    el.textContent = d.text;  // the whole continuation, decoded at once
    el.insertAdjacentText("afterend", " (" + d.n_tokens + " tokens)");
  });
  es.addEventListener("fail", (e) => {
    es.close();
    const p = document.createElement("p");
    p.className = "error";
    p.setAttribute("role", "alert");
    p.textContent = JSON.parse(e.data).message;
    out.prepend(p);
    status.textContent = "Stopped.";
  });
  es.addEventListener("done", (e) => { es.close(); status.textContent = JSON.parse(e.data).message; });
  es.onerror = () => { es.close(); status.textContent = "The connection to the server closed."; };
}

function setupSweep() {
  const out = document.getElementById("sweep-out");
  if (!out) return;
  const status = document.getElementById("sweep-status");
  const body = document.querySelector("#sweep-table tbody");
  const es = new EventSource(out.dataset.stream);
  const num = (v, digits) => (v === null || v === undefined ? "–" : v.toPrecision(digits));
  let marked = false;
  es.addEventListener("status", (e) => { status.textContent = JSON.parse(e.data).message; });
  es.addEventListener("prompt", (e) => {
    document.getElementById("prompt-used").textContent = JSON.parse(e.data).prompt;
  });
  es.addEventListener("row", (e) => {
    const d = JSON.parse(e.data);
    const tr = document.createElement("tr");
    const cells = [
      d.strength === null ? "baseline (no flip)" : String(d.strength),
      num(d.ppl, 4), num(d.ratio, 3), num(d.mass, 3),
      d.degraded ? (marked ? "yes" : "yes: degrades here") : "no",
      (d.text || "(end of text)") + " (" + d.n_tokens + " tokens)",
    ];
    cells.forEach((c, i) => {
      const td = document.createElement("td");
      td.textContent = c;
      td.className = i === 5 ? "text" : i > 0 && i < 4 ? "num" : "";
      tr.appendChild(td);
    });
    if (d.degraded) { tr.classList.add("degraded"); marked = true; }
    body.appendChild(tr);
    document.getElementById("sweep-chart").innerHTML = d.chart;  // SVG rendered by the server
  });
  es.addEventListener("fail", (e) => {
    es.close();
    const p = document.createElement("p");
    p.className = "error";
    p.setAttribute("role", "alert");
    p.textContent = JSON.parse(e.data).message;
    out.prepend(p);
    status.textContent = "Stopped.";
  });
  es.addEventListener("done", (e) => {
    es.close();
    const d = JSON.parse(e.data);
    status.textContent = d.message;
    const v = document.getElementById("sweep-verdict");
    v.textContent = d.verdict;
    v.hidden = false;
  });
  es.onerror = () => { es.close(); status.textContent = "The connection to the server closed."; };
}

document.addEventListener("DOMContentLoaded", () => { setupIndex(); setupSteer(); setupSweep(); });
