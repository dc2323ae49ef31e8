// The console's one script: confirmations, JSON checks, local times and
// countdowns, live updates (Server-Sent Events on an execution's page, a
// refresh of the executions list's first page) and package uploads.
"use strict";

function localTimes(root) {
  for (const t of root.querySelectorAll("time[data-ms]")) {
    const d = new Date(Number(t.dataset.ms));
    t.title = d.toISOString();
    t.textContent = d.toLocaleString();
  }
}

function fmtDuration(ms) {
  if (ms <= 0) return "now";
  const s = Math.round(ms / 1000);
  if (s < 60) return "in " + s + " s";
  if (s < 3600) return "in " + Math.floor(s / 60) + " min " + (s % 60) + " s";
  return "in " + Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
}

function countdowns() {
  for (const c of document.querySelectorAll(".countdown[data-due]")) {
    c.textContent = fmtDuration(Number(c.dataset.due) - Date.now());
  }
}

// A submit that needs a confirmation or valid JSON first.
document.addEventListener("submit", (event) => {
  const form = event.target;
  for (const area of form.querySelectorAll("textarea[data-json]")) {
    const out = form.querySelector(".json-error");
    try {
      if (area.value.trim() !== "") JSON.parse(area.value);
      if (out) out.textContent = "";
    } catch (e) {
      if (out) out.textContent = "Not valid JSON: " + e.message;
      event.preventDefault();
      return;
    }
  }
  // A button may ask its own question (the list's bulk actions).
  const asked = (event.submitter && event.submitter.dataset.confirm) || form.dataset.confirm;
  if (asked && !window.confirm(asked)) {
    event.preventDefault();
  }
});

// The executions list: the header's box selects every row.
document.addEventListener("change", (event) => {
  if (event.target.id !== "pick-all") return;
  for (const box of document.querySelectorAll("#rows input[name=id]")) {
    box.checked = event.target.checked;
  }
});

// A "Back" link goes back in the history (its href is where it goes
// without the script).
document.addEventListener("click", (event) => {
  const link = event.target.closest && event.target.closest("a[data-back]");
  if (link && history.length > 1) {
    event.preventDefault();
    history.back();
  }
});

// Replaces a region's HTML unless the person is typing in it or has
// filled in one of its fields (then it waits: see focusout below).
function replace(id, html) {
  const el = document.getElementById(id);
  if (!el || el.dataset.html === html) return;
  const typing = el.contains(document.activeElement) &&
    document.activeElement.matches("input, textarea, select");
  const edited = Array.from(el.querySelectorAll("textarea, input:not([type=hidden])"))
    .some((f) => f.value !== f.defaultValue);
  if (typing || edited) {
    el.dataset.pending = html;
    return;
  }
  el.dataset.html = html;
  el.innerHTML = html;
  localTimes(el);
}

function live() {
  const root = document.getElementById("execution");
  if (!root || !root.dataset.live) return;
  const source = new EventSource(root.dataset.live);
  for (const part of ["summary", "actions", "timeline"]) {
    source.addEventListener(part, (e) => replace(part, e.data));
  }
  // Rows that are new or changed since the last event, by their index.
  source.addEventListener("rows", (e) => {
    const list = document.querySelector("#timeline ol.timeline");
    if (!list) return;
    const parsed = document.createElement("template");
    parsed.innerHTML = e.data;
    for (const row of Array.from(parsed.content.children)) {
      const old = list.querySelector(`li[data-row="${row.dataset.row}"]`);
      if (old) old.replaceWith(row); else list.appendChild(row);
    }
    // A cut timeline keeps its last rows only.
    const max = Number(list.dataset.max || 0);
    const rows = list.querySelectorAll("li[data-row]");
    for (let i = 0; max && i < rows.length - max; i++) rows[i].remove();
    localTimes(list);
  });
  // The line above a cut timeline ("N earlier rows are not shown").
  source.addEventListener("more", (e) => {
    const list = document.querySelector("#timeline ol.timeline");
    if (!list) return;
    const parsed = document.createElement("template");
    parsed.innerHTML = e.data.trim();
    const line = parsed.content.firstElementChild;
    const old = list.querySelector("li.more");
    if (old && line) old.replaceWith(line);
    else if (old) old.remove();
    else if (line) list.prepend(line);
  });
  source.addEventListener("finished", (e) => {
    source.close();
    root.dataset.finished = e.data;
  });
  document.addEventListener("focusout", () => {
    for (const el of root.querySelectorAll("[data-pending]")) {
      const html = el.dataset.pending;
      delete el.dataset.pending;
      replace(el.id, html);
    }
  });
}

// The list's counts per status come after the page (they read every
// row the filters find).
async function counts() {
  const nav = document.getElementById("counts");
  if (!nav || !nav.dataset.src) return;
  try {
    const r = await fetch(nav.dataset.src, { credentials: "same-origin" });
    if (!r.ok) throw new Error(r.status + " " + r.statusText);
    nav.innerHTML = await r.text();
    nav.dataset.loaded = "1";
  } catch (e) {
    nav.textContent = "counts unavailable: " + e.message;
  }
}

function refreshList() {
  const rows = document.getElementById("rows");
  if (!rows || !rows.dataset.refresh) return;
  setInterval(async () => {
    if (document.hidden) return;
    // Rows ticked for a bulk action hold the list still.
    if (rows.querySelector("input[name=id]:checked")) return;
    try {
      const r = await fetch(rows.dataset.refresh, { credentials: "same-origin" });
      if (r.ok) replace("rows", await r.text());
    } catch (_) { /* the server restarts: try again next time */ }
  }, 2000);
}

function upload() {
  const form = document.getElementById("upload");
  if (!form) return;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const status = document.getElementById("upload-status");
    const file = form.elements.file.files[0];
    if (!file) return;
    const name = form.elements.name.value.trim() || file.name.replace(/\.wasm$/, "");
    status.className = "upload-status";
    status.textContent = "Uploading and compiling " + file.name + "…";
    try {
      const r = await fetch("/packages?name=" + encodeURIComponent(name), {
        method: "POST",
        body: file,
        credentials: "same-origin",
        headers: { "x-csrf-token": form.dataset.csrf, "content-type": "application/wasm" },
      });
      if (!r.ok) {
        status.className = "upload-status error";
        status.textContent = "Refused: " + (await r.text());
        return;
      }
      const p = await r.json();
      window.location = p.url;
    } catch (e) {
      status.className = "upload-status error";
      status.textContent = "Upload failed: " + e.message;
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  localTimes(document);
  countdowns();
  setInterval(countdowns, 1000);
  live();
  refreshList();
  counts();
  upload();
});
