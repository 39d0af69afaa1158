// The live view of florence-edge serve: every camera's newest annotated frame, its latest result per task, its frame
// rate, latency and state, and a form that runs any task on an uploaded image. Plain script, no build step. Data
// comes from the service's API with the bearer token (when the service has one) in a header, never in a URL: frames
// are fetched as blobs and the event stream is read with fetch, since <img> and EventSource cannot send headers.
"use strict";

const TOKEN_KEY = "florence-edge-token";
const POLL_MS = 2000;
const cards = new Map();
let token = sessionStorage.getItem(TOKEN_KEY) || "";

const $ = (id) => document.getElementById(id);

/** fetch with the token; a 401 asks for it. */
async function api(path, init = {}) {
  const headers = new Headers(init.headers || {});
  if (token) headers.set("Authorization", `Bearer ${token}`);
  const response = await fetch(path, { ...init, headers });
  if (response.status === 401) {
    $("auth").hidden = false;
    throw new Error("the API token is missing or wrong");
  }
  return response;
}

async function errorText(response) {
  try {
    const body = await response.json();
    return body.error && body.error.message ? body.error.message : `HTTP ${response.status}`;
  } catch {
    return `HTTP ${response.status}`;
  }
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** The card of a camera, made on first sight. */
function card(name) {
  let entry = cards.get(name);
  if (entry) return entry;
  const root = element("article", "camera");
  root.dataset.camera = name;
  const title = element("h2");
  title.append(element("span", "name", name));
  const state = element("span", "badge state", "…");
  title.append(state);
  const image = element("img", "frame");
  image.alt = `newest annotated frame of ${name}`;
  const numbers = element("div", "numbers");
  const fps = element("span", "fps", "– fps");
  const latency = element("span", "latency", "– ms");
  const frame = element("span", "frame-no", "frame –");
  numbers.append(fps, latency, frame);
  const results = element("ul", "results");
  root.append(title, image, numbers, results);
  $("cameras").append(root);
  entry = { root, state, image, fps, latency, frame, results, items: new Map(), loading: false, again: false, shown: -1 };
  cards.set(name, entry);
  return entry;
}

/** Fetches the newest annotated frame (one request at a time per camera; one more if frames came meanwhile). */
async function refreshFrame(name) {
  const entry = card(name);
  if (entry.loading) {
    entry.again = true;
    return;
  }
  entry.loading = true;
  try {
    const response = await api(`/api/cameras/${encodeURIComponent(name)}/latest.jpg`, { cache: "no-store" });
    if (response.ok) {
      const seq = Number(response.headers.get("X-Frame"));
      const url = URL.createObjectURL(await response.blob());
      const old = entry.image.src;
      entry.image.src = url;
      entry.image.dataset.frame = String(seq);
      entry.shown = seq;
      if (old.startsWith("blob:")) URL.revokeObjectURL(old);
    }
  } catch {
    // the next result tries again
  } finally {
    entry.loading = false;
    if (entry.again) {
      entry.again = false;
      refreshFrame(name);
    }
  }
}

function showResult(result) {
  const entry = card(result.camera);
  let item = entry.items.get(result.task);
  if (!item) {
    item = element("li");
    item.dataset.task = result.task;
    const task = element("span", "task", result.task);
    const text = element("span", "text");
    item.append(task, text);
    entry.items.set(result.task, item);
    entry.results.append(item);
  }
  item.dataset.frame = String(result.frame);
  item.querySelector(".text").textContent = `${result.summary} (frame ${result.frame}, ${Math.round(result.latency_ms.total)} ms)`;
  entry.frame.textContent = `frame ${result.frame}`;
  entry.latency.textContent = `${Math.round(result.latency_ms.total)} ms`;
  if (result.frame > entry.shown) refreshFrame(result.camera);
}

function showState(entry, state, reason) {
  entry.state.textContent = state || "…";
  entry.state.title = reason || "";
  entry.state.className = `badge state ${state === "running" ? "ok" : state === "failed" || state === "stalled" ? "bad" : ""}`;
}

async function pollCameras() {
  try {
    const response = await api("/api/cameras", { cache: "no-store" });
    if (!response.ok) return;
    const body = await response.json();
    $("model").textContent = `model ${body.model}`;
    $("no-cameras").hidden = body.cameras.length > 0;
    for (const camera of body.cameras) {
      const entry = card(camera.name);
      showState(entry, camera.state, camera.reason);
      entry.fps.textContent = `${camera.fps_processed.toFixed(1)} fps (camera ${camera.fps_received.toFixed(1)})`;
      if (camera.latency_ms !== null) entry.latency.textContent = `${Math.round(camera.latency_ms)} ms`;
      if (camera.frame !== null && camera.frame > entry.shown) refreshFrame(camera.name);
    }
  } catch {
    // shown by the connection badge
  }
}

/** Reads the server-sent events (results, camera states) and reconnects when the stream ends. */
async function followEvents() {
  const badge = $("connection");
  for (;;) {
    try {
      const response = await api("/api/events", { cache: "no-store" });
      if (!response.ok || !response.body) throw new Error(await errorText(response));
      badge.textContent = "live";
      badge.className = "badge ok";
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const event = /^event: (.*)$/m.exec(block);
          const data = /^data: (.*)$/m.exec(block);
          if (!event || !data) continue;
          const payload = JSON.parse(data[1]);
          if (event[1] === "result") showResult(payload);
          else if (event[1] === "status") showState(card(payload.camera), payload.state, payload.reason);
        }
      }
    } catch {
      // reconnect below
    }
    badge.textContent = "reconnecting…";
    badge.className = "badge bad";
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

async function loadTasks() {
  const select = $("infer-task");
  try {
    const response = await api("/api/tasks");
    const body = await response.json();
    select.replaceChildren();
    for (const task of body.tasks) {
      const option = element("option", undefined, task.task);
      option.value = task.task;
      option.dataset.takesText = String(task.takes_text);
      select.append(option);
    }
    select.value = "<OD>";
  } catch {
    // the form says so when it is used
  }
}

async function runUpload(event) {
  event.preventDefault();
  const file = $("infer-file").files[0];
  if (!file) return;
  const status = $("infer-status");
  const button = $("infer-run");
  const query = new URLSearchParams({ task: $("infer-task").value });
  const text = $("infer-text").value.trim();
  if (text) query.set("text", text);
  status.textContent = "running…";
  button.disabled = true;
  try {
    const response = await api(`/api/infer?${query}`, { method: "POST", body: file, headers: { "Content-Type": file.type || "application/octet-stream" } });
    if (!response.ok) {
      status.textContent = await errorText(response);
      return;
    }
    const body = await response.json();
    $("infer-image").src = body.overlay;
    $("infer-summary").textContent = `${body.task}: ${body.summary}`;
    const { overlay, ...rest } = body;
    $("infer-json").textContent = JSON.stringify(rest, null, 2);
    $("infer-result").hidden = false;
    $("infer-details").hidden = false;
    status.textContent = `done: ${Math.round(body.latency_ms.inference)} ms inference, ${Math.round(body.latency_ms.queue)} ms waiting`;
  } catch (error) {
    status.textContent = String(error.message || error);
  } finally {
    button.disabled = false;
  }
}

$("auth-form").addEventListener("submit", (event) => {
  event.preventDefault();
  token = $("token").value.trim();
  sessionStorage.setItem(TOKEN_KEY, token);
  $("auth").hidden = true;
  loadTasks();
  pollCameras();
});
$("infer-form").addEventListener("submit", runUpload);

loadTasks();
pollCameras();
setInterval(pollCameras, POLL_MS);
followEvents();
