// Redwall console: small helpers only. Pages work without this file; it
// adds live status, live logs, copy buttons, confirmations and a guard
// against double submits. No inline handlers (the CSP forbids them).
"use strict";

document.addEventListener("submit", (event) => {
  const form = event.target;
  const question = form.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    event.preventDefault();
    return;
  }
  if (form.dataset.sent === "1") {
    event.preventDefault();
    return;
  }
  form.dataset.sent = "1";
  for (const b of form.querySelectorAll("button[type=submit], button:not([type])")) {
    b.disabled = true;
  }
});

// Returning to a page from the history must allow sending its forms again.
window.addEventListener("pageshow", () => {
  for (const f of document.querySelectorAll("form[data-sent]")) {
    delete f.dataset.sent;
    for (const b of f.querySelectorAll("button")) b.disabled = false;
  }
});

document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const source = document.getElementById(button.getAttribute("data-copy"));
  if (!source || !navigator.clipboard) return;
  navigator.clipboard.writeText(source.textContent.trim()).then(() => {
    const before = button.textContent;
    button.textContent = "Copied";
    setTimeout(() => { button.textContent = before; }, 1500);
  });
});

// Download the recovery codes shown once, as a text file.
document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-download]");
  if (!button) return;
  const source = document.getElementById(button.getAttribute("data-download"));
  if (!source) return;
  const blob = new Blob([source.textContent.trim() + "\n"], { type: "text/plain" });
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = button.getAttribute("data-filename") || "redwall.txt";
  document.body.appendChild(link);
  link.click();
  link.remove();
});

// Live instance status: re-read the team's instances every few seconds.
function liveStatus() {
  const teams = document.querySelectorAll("[data-live-team]");
  if (teams.length === 0) return;
  const refresh = async () => {
    for (const team of teams) {
      const id = team.getAttribute("data-live-team");
      try {
        const r = await fetch(`/api/v1/teams/${encodeURIComponent(id)}/instances`, { credentials: "same-origin" });
        if (!r.ok) continue;
        for (const i of await r.json()) {
          const cell = team.querySelector(`[data-instance="${CSS.escape(i.id)}"] [data-status]`);
          if (cell && cell.getAttribute("data-status") !== i.status.state) {
            cell.setAttribute("data-status", i.status.state);
            cell.className = `status status-${i.status.state}`;
            cell.textContent = i.status.state.replace("_", " ");
          }
          // npm's progress while installing, or why it stopped.
          const reason = document.querySelector(`[data-status-reason="${CSS.escape(i.id)}"]`);
          const label = document.querySelector(`[data-reason-label="${CSS.escape(i.id)}"]`);
          if (reason && label) {
            const text = i.status.reason || "";
            reason.textContent = text;
            reason.hidden = label.hidden = text === "";
            reason.className = i.status.state === "installing" ? "" : "error-text";
            label.textContent = i.status.state === "installing" ? "Progress" : "Reason";
          }
        }
      } catch (_) { /* offline for a moment: try again next round */ }
    }
  };
  setInterval(refresh, 3000);
}

// Live logs through server-sent events.
function liveLogs() {
  const box = document.querySelector("[data-log-stream]");
  if (!box || !window.EventSource) return;
  const source = new EventSource(box.getAttribute("data-log-stream"));
  const status = document.querySelector("[data-log-state]");
  source.onopen = () => { if (status) status.textContent = "live"; };
  source.onerror = () => { if (status) status.textContent = "reconnecting"; };
  source.addEventListener("log", (event) => {
    let line;
    try { line = JSON.parse(event.data); } catch (_) { return; }
    const row = document.createElement("div");
    if (line.stream === "stderr") row.className = "stderr";
    row.textContent = `${line.at} ${line.text}`;
    const atBottom = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
    box.appendChild(row);
    while (box.childElementCount > 2000) box.firstElementChild.remove();
    if (atBottom) box.scrollTop = box.scrollHeight;
  });
}

document.addEventListener("DOMContentLoaded", () => {
  liveStatus();
  liveLogs();
  const logs = document.querySelector("[data-log-stream]");
  if (logs) logs.scrollTop = logs.scrollHeight;
});
