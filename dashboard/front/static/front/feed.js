// Live feed on the overview: polls the JSON endpoint and prepends new results, updates the counts
// and device states, without reloading the page. Polling (not SSE) keeps web workers free and works
// through every proxy.
(function () {
  "use strict";
  const script = document.currentScript;
  const url = script.getAttribute("data-url");
  const body = document.getElementById("feed");
  const status = document.getElementById("feed-status");
  const POLL_MS = 3000;
  const seen = new Set();
  let since = null;

  // One date-time format on every page: "2026-12-05 23:02" in the clinic's zone (the server's filter
  // "when" writes the same). Swedish locale: ISO-like order with a space, in every browser.
  const zone = document.body.getAttribute("data-tz") || undefined;
  const formatter = new Intl.DateTimeFormat("sv-SE", {
    timeZone: zone, year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit",
  });
  function formatTime(iso) { return formatter.format(new Date(iso)); }
  function timeElement(iso) {
    const time = document.createElement("time");
    time.dateTime = iso;
    time.textContent = formatTime(iso);
    return time;
  }

  JSON.parse(document.getElementById("feed-initial").textContent).forEach(function (r) {
    seen.add(r.id);
    if (!since || r.received_at > since) since = r.received_at;
  });

  function cell(content, heading) {
    const td = document.createElement("td");
    td.setAttribute("data-th", heading);
    if (content instanceof Node) td.appendChild(content); else td.textContent = content;
    return td;
  }
  function link(href, text, cls) {
    const a = document.createElement("a");
    a.href = href;
    const span = document.createElement("span");
    span.textContent = text;
    if (cls) span.className = cls;
    a.appendChild(span);
    return a;
  }
  function row(r) {
    const tr = document.createElement("tr");
    tr.dataset.result = r.id;
    tr.className = "new";
    tr.appendChild(cell(timeElement(r.received_at), "Received"));
    const label = document.createElement("span");
    label.appendChild(link(r.url, r.label, "label label-" + r.label));
    const summary = document.createElement("span");
    summary.className = "summary";
    summary.textContent = " " + r.summary;
    label.appendChild(summary);
    tr.appendChild(cell(label, "Result"));
    tr.appendChild(cell(r.patient_url ? link(r.patient_url, r.patient_ref) : "-", "Patient"));
    tr.appendChild(cell(r.heart_rate_bpm ? Math.round(r.heart_rate_bpm) + " bpm" : "-", "Heart rate"));
    tr.appendChild(cell(r.device, "Device"));
    return tr;
  }

  // The worklist, redrawn from each poll (exams change order as results and reviews arrive).
  const worklist = document.getElementById("worklist");
  function span(cls, text) {
    const el = document.createElement("span");
    el.className = cls;
    el.textContent = text;
    return el;
  }
  function worklistItem(e) {
    const li = document.createElement("li");
    li.className = "exam-item" + (e.reviewed ? " reviewed" : "");
    li.dataset.exam = e.id;
    li.dataset.label = e.label;
    li.dataset.murmur = e.murmur;
    li.dataset.reviewed = e.reviewed ? "true" : "false";
    const a = document.createElement("a");
    a.className = "exam-link";
    a.href = e.url;
    const answer = span("exam-answer", "");
    answer.appendChild(span("label label-" + e.label, e.label));
    if (e.murmur === "present") { answer.appendChild(document.createTextNode(" ")); answer.appendChild(span("label label-murmur", "murmur")); }
    answer.appendChild(document.createTextNode(" "));
    answer.appendChild(e.reviewed ? span("tag", "reviewed") : span("tag tag-todo", "to review"));
    a.appendChild(answer);
    a.appendChild(span("reason", e.reason));
    const meta = span("meta", (e.patient_ref ? "Patient " + e.patient_ref : "no patient reference") + " · ");
    if (e.started_at) meta.appendChild(timeElement(e.started_at));
    meta.appendChild(document.createTextNode(" · " + e.device + (e.clinic ? " · " + e.clinic : "")));
    a.appendChild(meta);
    li.appendChild(a);
    return li;
  }
  function updateWorklist(items) {
    if (!worklist || !items) return;
    const now = Array.from(worklist.querySelectorAll("li[data-exam]")).map(function (li) {
      return [li.dataset.exam, li.dataset.label, li.dataset.murmur, li.dataset.reviewed].join("|");
    }).join(",");
    const next = items.map(function (e) { return [e.id, e.label, e.murmur, e.reviewed].join("|"); }).join(",");
    if (now === next) return;  // unchanged: leave the DOM (and a finger on it) alone
    worklist.replaceChildren.apply(worklist, items.map(worklistItem));
  }

  function update(payload) {
    updateWorklist(payload.worklist);
    const fresh = payload.results.filter(function (r) { return !seen.has(r.id); });
    fresh.reverse().forEach(function (r) {  // oldest first, so the newest ends on top
      seen.add(r.id);
      if (!since || r.received_at > since) since = r.received_at;
      const empty = body.querySelector("tr.empty");
      if (empty) empty.remove();
      body.insertBefore(row(r), body.firstChild);
    });
    ["abnormal", "unsure"].forEach(function (label) {
      const el = document.getElementById("count-" + label);
      if (el) el.textContent = payload.counts[label];
    });
    payload.devices.forEach(function (d) {
      const tr = document.querySelector('tr[data-device="' + CSS.escape(d.device_id) + '"]');
      if (!tr) return;
      const state = tr.querySelector(".state");
      state.textContent = d.state;
      state.className = "state state-" + d.state;
      const seen = tr.querySelector(".last-seen");
      if (d.last_seen && seen) { seen.replaceChildren(timeElement(d.last_seen)); }
    });
  }

  async function poll() {
    try {
      const response = await fetch(url + (since ? "?since=" + encodeURIComponent(since) : ""), {
        headers: { Accept: "application/json" },
        credentials: "same-origin",
      });
      if (response.status === 403 || response.redirected) { status.textContent = "logged out"; return; }
      if (!response.ok) throw new Error("HTTP " + response.status);
      update(await response.json());
      status.textContent = "live";
      status.className = "live";
    } catch (err) {
      status.textContent = "reconnecting…";
      status.className = "live stale";
    }
    setTimeout(poll, POLL_MS);
  }
  setTimeout(poll, POLL_MS);
})();
