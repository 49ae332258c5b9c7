// The dashboard's script: keeps the pages live from the agent's API and acts through it.
// Everything that came from a job (names, labels, logs, reasons) reaches the page as text
// (textContent, text nodes), never as markup.
"use strict";

const body = document.body;
const API = body.dataset.api;
const UI = body.dataset.ui;
const CSRF = (document.querySelector('meta[name="csrf"]') || {}).content || "";

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child === null || child === undefined ? "" : child);
  return node;
}

function notice(text, ok) {
  const box = document.getElementById("notice");
  box.textContent = text;
  box.className = ok ? "ok" : "";
  box.hidden = false;
}

// A call of the API with this session's cookie; a refusal is thrown with the API's message.
async function api(method, path, params) {
  const url = API + path + (params ? "?" + new URLSearchParams(params) : "");
  const headers = method === "GET" ? {} : {"X-Conveyor-CSRF": CSRF};
  const response = await fetch(url, {method, headers, credentials: "same-origin"});
  if (response.status === 204) return null;
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    throw new Error((data && data.message) || `${method} ${path}: HTTP ${response.status}`);
  }
  return data;
}

function when(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleString() : "";
}

function setState(node, state) {
  node.textContent = state;
  node.className = "state state-" + state;
}

// The agent's transitions as they are committed; `onOpen` runs on every (re)connection, when
// what happened while away must be fetched again.
function transitions(params, onTransition, onOpen) {
  const source = new EventSource(API + "/events" + (params ? "?" + new URLSearchParams(params) : ""));
  const live = document.getElementById("live");
  source.addEventListener("open", () => {
    if (live) { live.textContent = "● live"; live.classList.add("on"); }
    if (onOpen) onOpen();
  });
  source.addEventListener("error", () => {
    if (live) { live.textContent = "○ reconnecting"; live.classList.remove("on"); }
  });
  source.addEventListener("transition", (event) => onTransition(JSON.parse(event.data)));
  return source;
}

function debounce(fn, ms) {
  let timer = null;
  return () => { clearTimeout(timer); timer = setTimeout(fn, ms); };
}

// ------------------------------------------------------------------------------ the jobs list

function jobsPage() {
  const form = document.getElementById("filters");
  const rows = document.getElementById("rows");
  const query = new URLSearchParams(location.search);
  for (const field of form.elements) if (field.name && query.has(field.name)) field.value = query.get(field.name);
  const pages = [null];  // the cursor of each page shown so far: Next pushes, First resets

  function filters() {
    const out = {};
    for (const field of form.elements) if (field.name && field.value.trim()) out[field.name] = field.value.trim();
    return out;
  }

  function row(job) {
    const labels = Object.entries(job.labels || {}).map(([k, v]) => el("span", {class: "label"}, `${k}=${v}`));
    const array = job.array_id ? el("a", {href: `${UI}/arrays/${encodeURIComponent(job.array_id)}`}, `${job.array_id}[${job.array_index}]`) : "";
    return el("tr", {dataset: {job: job.id}},
      el("td", {}, el("a", {href: `${UI}/jobs/${encodeURIComponent(job.id)}`}, el("code", {}, job.id))),
      el("td", {class: "name"}, job.name || ""),
      el("td", {}, el("span", {class: "state state-" + job.state}, job.state), " ", el("small", {}, job.substate || "")),
      el("td", {}, job.exit_code === null ? "" : String(job.exit_code)),
      el("td", {}, job.image || ""),
      el("td", {}, ...labels),
      el("td", {}, array),
      el("td", {}, when(job.created_at)));
  }

  let latest = 0;  // answers can arrive out of order: only the last request's is shown
  async function load() {
    const params = filters();
    const cursor = pages[pages.length - 1];
    if (cursor) params.cursor = cursor;
    const mine = ++latest;
    try {
      const res = await fetch(`${UI}/data/jobs?` + new URLSearchParams(params), {credentials: "same-origin"});
      const data = await res.json();
      if (mine !== latest) return;
      if (!res.ok) throw new Error(data.message || `HTTP ${res.status}`);
      rows.replaceChildren(...data.jobs.map(row));
      if (!data.jobs.length) rows.append(el("tr", {}, el("td", {colspan: "8"}, "no job matches")));
      for (const node of document.querySelectorAll("[data-count]")) node.textContent = String(data.counts[node.dataset.count] || 0);
      document.getElementById("more").disabled = !data.next;
      document.getElementById("more").dataset.next = data.next || "";
      document.getElementById("first").disabled = pages.length === 1;
      body.dataset.loaded = String(Date.now());
    } catch (err) {
      notice(err.message);
    }
  }

  const refresh = debounce(load, 300);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    pages.splice(1);
    history.replaceState(null, "", "?" + new URLSearchParams(filters()));
    load();
  });
  for (const button of document.querySelectorAll(".count")) {
    button.addEventListener("click", () => { form.elements.state.value = button.dataset.state; form.requestSubmit(); });
  }
  document.getElementById("more").addEventListener("click", (event) => { pages.push(event.target.dataset.next); load(); });
  document.getElementById("first").addEventListener("click", () => { pages.splice(1); load(); });
  transitions(null, (t) => {
    const shown = rows.querySelector(`tr[data-job="${CSS.escape(t.job_id)}"]`);
    if (shown) {
      setState(shown.querySelector(".state"), t.to_state);
      shown.querySelector("small").textContent = t.substate || "";
    }
    refresh();  // new jobs, counts, and rows that now match a filter or no longer do
  }, refresh);
  load();
}

// ------------------------------------------------------------------------------ one job

function jobPage() {
  const box = document.getElementById("job");
  const id = box.dataset.id;
  const verbs = JSON.parse(box.dataset.verbs);
  const state = document.getElementById("state");

  function buttons() {
    for (const button of document.querySelectorAll("button.act")) {
      button.disabled = !verbs[button.dataset.verb].includes(state.textContent);
    }
  }

  for (const button of document.querySelectorAll("button.act")) {
    button.addEventListener("click", async () => {
      const verb = button.dataset.verb;
      if (button.dataset.confirm === "true" && !confirm(`${verb} job ${id}? This cannot be undone.`)) return;
      try {
        if (verb === "remove") {
          await api("DELETE", `/jobs/${encodeURIComponent(id)}`);
          location.assign(`${UI}/jobs`);
          return;
        }
        await api("POST", `/jobs/${encodeURIComponent(id)}/${verb}`);
        notice(`${verb}: done`, true);
      } catch (err) {
        notice(err.message);
      }
    });
  }

  const timeline = document.getElementById("timeline");
  for (const cell of document.querySelectorAll("td.time")) cell.textContent = when(Number(cell.dataset.at));
  let seen = timeline.children.length;
  transitions({job: id, since: 0}, (t) => {
    if (seen-- > 0) return;  // already on the page
    setState(state, t.to_state);
    document.getElementById("substate").textContent = t.substate || "";
    timeline.append(el("tr", {},
      el("td", {}, when(t.at)), el("td", {}, t.from_state || ""),
      el("td", {}, el("span", {class: "state state-" + t.to_state}, t.to_state)),
      el("td", {}, t.substate || ""), el("td", {}, t.reason || "")));
    buttons();
    if (["Done", "Failed"].includes(t.to_state)) setTimeout(usage, 500);
  }, () => { seen = timeline.children.length; });
  buttons();
  followLogs(id);
  usage();
  setInterval(() => { if (state.textContent === "Running") usage(); }, 5000);  // samples come every few seconds

  async function usage() {
    const note = document.getElementById("usage-note");
    let entry;
    try {
      [entry] = await api("GET", "/usage", {job: id, series: "true"});
    } catch (err) {
      note.textContent = err.message;
      return;
    }
    const samples = entry.series || [];
    if (!samples.length || typeof Chart === "undefined") {
      note.textContent = "no usage samples kept for this job (they are kept while it runs)";
      return;
    }
    const limit = samples[samples.length - 1].memory_limit;
    const mib = (bytes) => bytes === null || bytes === undefined ? null : bytes / 1048576;
    const cpu = samples.map((s, i) => i === 0 ? null : Math.max(0, s.cpu_ns - samples[i - 1].cpu_ns) / ((s.at - samples[i - 1].at) * 1e7));
    const datasets = [
      {label: "CPU %", data: cpu, yAxisID: "cpu", borderColor: "#2f6fdf"},
      {label: "memory MiB", data: samples.map((s) => mib(s.memory)), yAxisID: "mem", borderColor: "#1a7f37"},
    ];
    if (limit && limit < 2 ** 60) datasets.push({label: "memory limit MiB", data: samples.map(() => mib(limit)), yAxisID: "mem", borderColor: "#a3271f", borderDash: [4, 4]});
    const canvas = document.getElementById("usage");
    if (canvas.chart) canvas.chart.destroy();
    canvas.chart = new Chart(canvas, {
      type: "line",
      data: {labels: samples.map((s) => new Date(s.at * 1000).toLocaleTimeString()), datasets},
      options: {animation: false, maintainAspectRatio: false, pointRadius: 0,
        scales: {cpu: {position: "left", beginAtZero: true, title: {display: true, text: "CPU %"}},
                 mem: {position: "right", beginAtZero: true, title: {display: true, text: "MiB"}}}},
    });
    note.textContent = `${samples.length} samples`;
  }
}

// A job's output, stdout and stderr in their own panes, followed until the job ends.
function followLogs(id) {
  const panes = {stdout: document.getElementById("stdout"), stderr: document.getElementById("stderr")};
  const tail = document.getElementById("tail");
  const follow = document.getElementById("follow");
  let controller = null;

  async function start() {
    if (controller) controller.abort();
    controller = new AbortController();
    const decoders = {stdout: new TextDecoder(), stderr: new TextDecoder()};
    for (const pane of Object.values(panes)) pane.replaceChildren();
    const params = {follow: String(follow.checked)};
    if (tail.value !== "") params.tail = tail.value;
    let response;
    try {
      response = await fetch(`${API}/jobs/${encodeURIComponent(id)}/logs?` + new URLSearchParams(params), {signal: controller.signal, credentials: "same-origin"});
    } catch (err) {
      return;
    }
    const reader = response.body.getReader();
    const text = new TextDecoder();
    let pending = "";
    for (;;) {
      let chunk;
      try { chunk = await reader.read(); } catch (err) { return; }
      if (chunk.done) break;
      pending += text.decode(chunk.value, {stream: true});
      const lines = pending.split("\n");
      pending = lines.pop();
      for (const line of lines) {
        if (!line) continue;
        const frame = JSON.parse(line);
        if (frame.error) notice(frame.error.message);
        if (!frame.stream) continue;
        const bytes = Uint8Array.from(atob(frame.data), (c) => c.charCodeAt(0));
        const pane = panes[frame.stream];
        const atEnd = pane.scrollTop + pane.clientHeight >= pane.scrollHeight - 4;
        pane.append(document.createTextNode(decoders[frame.stream].decode(bytes, {stream: true})));
        if (atEnd) pane.scrollTop = pane.scrollHeight;
      }
    }
  }

  tail.addEventListener("change", start);
  follow.addEventListener("change", start);
  start();
}

// ------------------------------------------------------------------------------ an array

function arrayPage() {
  const grid = document.getElementById("grid");
  transitions(null, (t) => {
    const cell = grid.querySelector(`[data-job="${CSS.escape(t.job_id)}"]`);
    if (cell) {
      cell.className = "cell state-" + t.to_state;
      cell.title = cell.title.replace(/: .*$/, ": " + t.to_state);
    }
  });
}

function loginPage() {
  const next = new URLSearchParams(location.search).get("next");
  if (next) document.getElementById("next").value = next;
}

const PAGES = {jobs: jobsPage, job: jobPage, array: arrayPage, login: loginPage};
(PAGES[body.dataset.page] || (() => {}))();
