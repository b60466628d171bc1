// The overnight dashboard: plain JavaScript, no build step, no dependencies.
// Every call sends the API key (kept in this tab's sessionStorage) as the x-api-key header, never in a URL.
// All server text is put on the page with textContent, never parsed as HTML.
"use strict";

const KEY_STORAGE = "overnight.apiKey";
const POLL_MS = 1000;
const RETRY_MS = 5000; // after a rate limit, an overload or a lost connection
const RESULTS_PAGE_SIZE = 20;
const BATCH_PAGE_SIZE = 50;

const $ = (id) => document.getElementById(id);

const state = {
  openMode: false,
  batchLimit: BATCH_PAGE_SIZE,
  timer: null,
  route: null,
  batch: null,
  resultsOffset: 0,
  resultsHasMore: false,
  pollError: false,
  nextFlash: null, // shown once by the next route() (which otherwise clears old messages)
};

// --- the API ------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, type, message) {
    super(message);
    this.status = status;
    this.type = type;
  }
}

function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

async function api(method, path, body, key = apiKey()) {
  const headers = { "anthropic-version": "2023-06-01" };
  if (key) headers["x-api-key"] = key;
  if (body !== undefined) headers["content-type"] = "application/json";
  let response;
  try {
    // Relative to the page ("./v1/..."), so the dashboard also works behind a proxy that adds a path prefix.
    response = await fetch("." + path, {
      method,
      headers,
      body: body === undefined ? undefined : body,
      cache: "no-store",
      credentials: "omit",
      referrerPolicy: "no-referrer",
    });
  } catch (err) {
    throw new ApiError(0, "network_error", "The server could not be reached: " + err.message);
  }
  if (response.ok) return response;
  let type = "api_error";
  let message = "HTTP " + response.status;
  try {
    const envelope = await response.json();
    if (envelope && envelope.error) {
      type = envelope.error.type || type;
      message = envelope.error.message || message;
    }
  } catch (_ignored) {
    // Not our error envelope (a proxy in between?): the status line is all there is.
  }
  throw new ApiError(response.status, type, message);
}

async function apiJson(method, path, body) {
  return (await api(method, path, body)).json();
}

// --- small DOM helpers --------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "text") node.textContent = value;
    else if (name === "className") node.className = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function show(id, visible) {
  $(id).hidden = !visible;
}

function flash(message, kind = "error") {
  const node = $("flash");
  node.textContent = message;
  node.className = "flash " + kind;
  node.hidden = !message;
}

function fillStats(id, pairs) {
  const list = $(id);
  list.replaceChildren();
  for (const [label, value, key] of pairs) {
    list.append(el("dt", { text: label }), el("dd", { text: String(value), "data-stat": key || label }));
  }
}

const SEGMENTS = ["succeeded", "errored", "canceled", "expired"];

function progressBar(counts) {
  const outer = el("div", { className: "progress" });
  setBar(outer, counts);
  const total = countsTotal(counts);
  const label = el("span", { className: "hint", text: `${total - counts.processing}/${total}` });
  return el("div", { className: "progress-cell" }, outer, label);
}

function setBar(outer, counts) {
  // One segment per outcome, so errors show up while the batch is still running.
  const total = countsTotal(counts);
  if (outer.children.length !== SEGMENTS.length) {
    outer.replaceChildren(...SEGMENTS.map((type) => el("div", { className: "segment " + type })));
  }
  SEGMENTS.forEach((type, i) => {
    // Widths go through the CSSOM (allowed by the CSP), not through an inline style attribute.
    outer.children[i].style.width = (total ? (100 * counts[type]) / total : 0).toFixed(2) + "%";
  });
  outer.setAttribute("role", "progressbar");
  outer.setAttribute("aria-valuemin", "0");
  outer.setAttribute("aria-valuemax", String(total));
  outer.setAttribute("aria-valuenow", String(total - counts.processing));
}

function countsTotal(counts) {
  return counts.processing + counts.succeeded + counts.errored + counts.canceled + counts.expired;
}

function when(timestamp) {
  if (!timestamp) return "—";
  // Local time as YYYY-MM-DD HH:MM:SS: unambiguous in every locale.
  const t = new Date(timestamp);
  const two = (n) => String(n).padStart(2, "0");
  return `${t.getFullYear()}-${two(t.getMonth() + 1)}-${two(t.getDate())} ` +
    `${two(t.getHours())}:${two(t.getMinutes())}:${two(t.getSeconds())}`;
}

function duration(seconds) {
  if (!isFinite(seconds) || seconds < 0) return "—";
  if (seconds < 60) return seconds.toFixed(1) + " s";
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

function number(value) {
  return Number(value).toLocaleString("en-US");
}

function confirmAction(text) {
  // A modal <dialog> instead of window.confirm(): styled, and no inline script needed.
  return new Promise((resolve) => {
    const dialog = $("confirm-dialog");
    $("confirm-text").textContent = text;
    dialog.returnValue = "";
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "yes"), { once: true });
    dialog.showModal();
  });
}

// --- signing in ---------------------------------------------------------------------------------

async function probeOpenMode() {
  // With no API keys configured the server accepts any call; then no sign-in is needed.
  try {
    await api("GET", "/v1/messages/batches?limit=1", undefined, "");
    return true;
  } catch (_err) {
    return false;
  }
}

async function signIn(event) {
  event.preventDefault();
  const key = $("api-key").value.trim();
  show("sign-in-error", false);
  try {
    await api("GET", "/v1/messages/batches?limit=1", undefined, key);
  } catch (err) {
    $("sign-in-error").textContent = err.status === 401 ? "That API key was not accepted." : err.message;
    show("sign-in-error", true);
    return;
  }
  sessionStorage.setItem(KEY_STORAGE, key);
  $("api-key").value = "";
  route();
}

function signOut() {
  sessionStorage.removeItem(KEY_STORAGE);
  state.openMode = false;
  location.hash = "#/";
  route();
}

function updateTopbar() {
  const signedIn = Boolean(apiKey());
  $("mode").textContent = signedIn ? "signed in" : state.openMode ? "open mode (no API keys configured)" : "";
  show("sign-out", signedIn);
}

// --- routing ------------------------------------------------------------------------------------

async function route() {
  clearTimeout(state.timer);
  state.timer = null;
  const [message, kind] = state.nextFlash || ["", "error"];
  state.nextFlash = null;
  flash(message, kind);
  if (!apiKey() && !state.openMode) state.openMode = await probeOpenMode();
  updateTopbar();
  const signedIn = Boolean(apiKey()) || state.openMode;
  show("sign-in-view", !signedIn);
  if (!signedIn) {
    show("list-view", false);
    show("batch-view", false);
    $("api-key").focus();
    return;
  }
  const match = /^#\/batches\/([A-Za-z0-9_]+)$/.exec(location.hash);
  show("list-view", !match);
  show("batch-view", Boolean(match));
  if (match) {
    const batchId = match[1];
    if (state.route !== batchId) {
      state.route = batchId;
      state.batch = null;
      state.resultsOffset = 0;
      // Nothing of the previous batch may show under this one's id while it loads (or if it is unknown).
      $("batch-id").textContent = batchId;
      $("batch-status").textContent = "";
      for (const box of ["batch-counts", "batch-timings", "batch-usage"]) $(box).replaceChildren();
      $("batch-progress").replaceChildren();
      $("batch-progress-text").textContent = "";
      show("results-panel", false);
      show("results-pending", false);
      for (const button of ["cancel-batch", "delete-batch", "download-results"]) $(button).disabled = true;
      $("result-type").value = "";
      $("custom-id-filter").value = "";
    }
    await refreshBatch(batchId);
  } else {
    state.route = null;
    await refreshList();
  }
}

function handleError(err) {
  if (err.status === 401) {
    // The key was revoked or the server restarted with other keys: back to the sign-in form.
    sessionStorage.removeItem(KEY_STORAGE);
    state.nextFlash = ["The server no longer accepts this API key; sign in again.", "error"];
    route();
    return;
  }
  flash(err.type ? `${err.type}: ${err.message}` : String(err));
}

function poll(fn, delay = POLL_MS) {
  clearTimeout(state.timer);
  state.timer = setTimeout(fn, delay);
}

function transient(err) {
  // Worth polling again: rate limited (the dashboard's calls count against the workspace's limit),
  // overloaded, a server error, or no connection (a restart).
  return err.status === 0 || err.status === 429 || err.status >= 500;
}

function pollFailed(err, fn) {
  handleError(err);
  state.pollError = true;
  if (transient(err)) poll(fn, RETRY_MS);
}

function pollSucceeded() {
  if (state.pollError) flash("");
  state.pollError = false;
}

// --- the batch list -----------------------------------------------------------------------------

async function refreshList() {
  if (state.route !== null) return;
  let page;
  let usage;
  try {
    [page, usage] = await Promise.all([
      apiJson("GET", `/v1/messages/batches?limit=${state.batchLimit}`),
      apiJson("GET", "/v1/overnight/usage"),
    ]);
  } catch (err) {
    if (state.route === null) pollFailed(err, refreshList);
    return;
  }
  if (state.route !== null) return;
  pollSucceeded();
  renderUsage("workspace-usage", usage, [["Batches", number(usage.batches), "batches"]]);
  const rows = page.data.map((batch) => {
    const c = batch.request_counts;
    const row = el(
      "tr",
      { "data-batch-id": batch.id },
      el("td", {}, el("a", { href: "#/batches/" + batch.id, text: batch.id })),
      el("td", {}, el("span", { className: "status " + batch.processing_status, text: batch.processing_status })),
      el("td", {}, progressBar(c)),
      el("td", { text: number(c.succeeded) }),
      el("td", { text: number(c.errored) }),
      el("td", { text: number(c.canceled) }),
      el("td", { text: number(c.expired) }),
      el("td", { text: when(batch.created_at) }),
    );
    return row;
  });
  $("batches").querySelector("tbody").replaceChildren(...rows);
  show("no-batches", rows.length === 0);
  show("more-batches", page.has_more && state.batchLimit < 1000);
  // Refresh while anything is still running (the list is small: one page of at most 1000).
  if (page.data.some((batch) => batch.processing_status !== "ended")) poll(refreshList);
}

function renderUsage(id, usage, extra = []) {
  fillStats(id, [
    ...extra,
    ["Input tokens", number(usage.input_tokens), "input_tokens"],
    ["Output tokens", number(usage.output_tokens), "output_tokens"],
    ["Cache write tokens", number(usage.cache_creation_input_tokens), "cache_creation_input_tokens"],
    ["Cache read tokens", number(usage.cache_read_input_tokens), "cache_read_input_tokens"],
  ]);
}

// --- submitting a file --------------------------------------------------------------------------

function parseJsonl(text) {
  // The same checks the CLI makes, so that a bad file names its line and nothing is sent.
  const requests = [];
  const seen = new Map();
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (!line) continue;
    const where = `line ${i + 1}`;
    let item;
    try {
      item = JSON.parse(line);
    } catch (err) {
      throw new Error(`${where}: not valid JSON (${err.message})`);
    }
    if (item === null || typeof item !== "object" || Array.isArray(item)) {
      throw new Error(`${where}: expected a JSON object with "custom_id" and "params"`);
    }
    if (typeof item.custom_id !== "string" || !item.custom_id) {
      throw new Error(`${where}: "custom_id" is missing or not a string`);
    }
    if (item.params === null || typeof item.params !== "object" || Array.isArray(item.params)) {
      throw new Error(`${where}: "params" is missing or not an object`);
    }
    if (seen.has(item.custom_id)) {
      throw new Error(`${where}: custom_id ${JSON.stringify(item.custom_id)} repeats line ${seen.get(item.custom_id)}`);
    }
    seen.set(item.custom_id, i + 1);
    requests.push({ custom_id: item.custom_id, params: item.params });
  }
  if (!requests.length) throw new Error("the file has no requests");
  return requests;
}

async function submitFile(event) {
  event.preventDefault();
  const status = $("submit-status");
  const file = $("submit-file").files[0];
  if (!file) {
    status.textContent = "Choose a .jsonl file first.";
    return;
  }
  let requests;
  try {
    requests = parseJsonl(await file.text());
  } catch (err) {
    status.textContent = `${file.name}: ${err.message}. Nothing was sent.`;
    return;
  }
  status.textContent = `Sending ${number(requests.length)} requests…`;
  try {
    const batch = await apiJson("POST", "/v1/messages/batches", JSON.stringify({ requests }));
    status.textContent = `Created ${batch.id} with ${number(requests.length)} requests.`;
    $("submit-file").value = "";
    location.hash = "#/batches/" + batch.id;
  } catch (err) {
    status.textContent = `The server refused the batch: ${err.type}: ${err.message}`;
  }
}

// --- one batch ----------------------------------------------------------------------------------

async function refreshBatch(batchId) {
  let batch;
  let usage;
  try {
    // One after the other: usage read after the batch is at least as new, so an ended batch (which
    // stops the polling) never stays shown with the usage of a moment before its last results.
    batch = await apiJson("GET", "/v1/messages/batches/" + encodeURIComponent(batchId));
    usage = await apiJson("GET", `/v1/overnight/batches/${encodeURIComponent(batchId)}/usage`);
  } catch (err) {
    if (state.route === batchId) pollFailed(err, () => refreshBatch(batchId));
    return;
  }
  if (state.route !== batchId) return;
  pollSucceeded();
  const wasEnded = state.batch && state.batch.processing_status === "ended";
  state.batch = batch;
  renderBatch(batch, usage);
  const ended = batch.processing_status === "ended";
  const archived = batch.archived_at !== null;
  $("results-pending").textContent = archived
    ? `The results were archived on ${when(batch.archived_at)} and are no longer available.`
    : "Results are available once the batch has ended.";
  show("results-pending", !ended || archived);
  show("results-panel", ended && !archived);
  if (ended && !archived && !wasEnded) await loadResults();
  if (!ended) poll(() => refreshBatch(batchId));
}

function renderBatch(batch, usage) {
  const c = batch.request_counts;
  const total = countsTotal(c);
  const done = total - c.processing;
  $("batch-id").textContent = batch.id;
  const status = $("batch-status");
  status.textContent = batch.processing_status;
  status.className = "status " + batch.processing_status;
  setBar($("batch-progress"), c);
  $("batch-progress-text").textContent = `${number(done)} of ${number(total)} requests done`;
  fillStats("batch-counts", [
    ["Total", number(total), "total"],
    ["Processing", number(c.processing), "processing"],
    ["Succeeded", number(c.succeeded), "succeeded"],
    ["Errored", number(c.errored), "errored"],
    ["Canceled", number(c.canceled), "canceled"],
    ["Expired", number(c.expired), "expired"],
  ]);
  const created = Date.parse(batch.created_at);
  const end = batch.ended_at ? Date.parse(batch.ended_at) : Date.now();
  const elapsed = (end - created) / 1000;
  const rate = elapsed > 0 ? done / elapsed : 0;
  const remaining = rate > 0 && c.processing > 0 ? c.processing / rate : NaN;
  fillStats("batch-timings", [
    ["Created", when(batch.created_at), "created_at"],
    ["Ended", when(batch.ended_at), "ended_at"],
    ["Cancel requested", when(batch.cancel_initiated_at), "cancel_initiated_at"],
    ["Expires", when(batch.expires_at), "expires_at"],
    [batch.ended_at ? "Took" : "Running for", duration(elapsed), "elapsed"],
    ["Throughput", rate.toFixed(2) + " requests/s", "throughput"],
    ["Time left (estimate)", duration(remaining), "eta"],
  ]);
  renderUsage("batch-usage", usage);
  $("cancel-batch").disabled = batch.processing_status !== "in_progress";
  $("delete-batch").disabled = batch.processing_status !== "ended";
  $("download-results").disabled = batch.results_url === null;
}

async function cancelBatch() {
  const batch = state.batch;
  if (!batch || !(await confirmAction(`Cancel batch ${batch.id}? Requests not yet sent will be canceled.`))) return;
  try {
    await apiJson("POST", `/v1/messages/batches/${encodeURIComponent(batch.id)}/cancel`);
    flash(`Cancel requested for ${batch.id}.`, "info");
  } catch (err) {
    handleError(err);
  }
  await refreshBatch(batch.id);
}

async function deleteBatch() {
  const batch = state.batch;
  if (!batch || !(await confirmAction(`Delete batch ${batch.id} and all its results? This cannot be undone.`))) return;
  try {
    await apiJson("DELETE", "/v1/messages/batches/" + encodeURIComponent(batch.id));
  } catch (err) {
    handleError(err);
    return;
  }
  state.nextFlash = [`Deleted ${batch.id}.`, "info"];
  location.hash = "#/";
}

async function downloadResults() {
  const batch = state.batch;
  if (!batch) return;
  try {
    // Fetched with the key header, then handed to the browser as a local blob: no key in any URL.
    const blob = await (await api("GET", `/v1/messages/batches/${encodeURIComponent(batch.id)}/results`)).blob();
    const link = el("a", { href: URL.createObjectURL(blob), download: batch.id + "_results.jsonl" });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  } catch (err) {
    handleError(err);
  }
}

// --- results ------------------------------------------------------------------------------------

function resultSummary(result) {
  if (result.type === "succeeded") {
    const message = result.message;
    const text = (message.content || [])
      .map((block) => (block.type === "text" ? block.text : `[${block.type}]`))
      .join(" ");
    return `${message.stop_reason}: ${text}`;
  }
  if (result.type === "errored") {
    const error = result.error && result.error.error ? result.error.error : result.error || {};
    return `${error.type || "error"}: ${error.message || ""}`;
  }
  return result.type;
}

function fullText(result) {
  if (result.type === "succeeded") {
    return (result.message.content || [])
      .map((block) => (block.type === "text" ? block.text : JSON.stringify(block, null, 2)))
      .join("\n\n");
  }
  return resultSummary(result);
}

async function loadResults() {
  const batch = state.batch;
  if (!batch) return;
  const params = new URLSearchParams({ limit: String(RESULTS_PAGE_SIZE), offset: String(state.resultsOffset) });
  const type = $("result-type").value;
  const idFilter = $("custom-id-filter").value.trim();
  if (type) params.set("type", type);
  if (idFilter) params.set("custom_id", idFilter);
  let page;
  try {
    page = await apiJson("GET", `/v1/overnight/batches/${encodeURIComponent(batch.id)}/results?${params}`);
  } catch (err) {
    handleError(err);
    return;
  }
  if (state.route !== batch.id) return;
  state.resultsHasMore = page.has_more;
  const rows = page.data.map((line, index) => {
    const summary = resultSummary(line.result);
    const row = el(
      "tr",
      { className: "result-row", tabindex: "0", "data-custom-id": line.custom_id, "data-type": line.result.type },
      el("td", {}, el("code", { text: line.custom_id })),
      el("td", {}, el("span", { className: "status " + line.result.type, text: line.result.type })),
      el("td", { className: "summary", text: summary.length > 160 ? summary.slice(0, 160) + "…" : summary }),
    );
    const open = () => openResult(page.data[index]);
    row.addEventListener("click", open);
    row.addEventListener("keydown", (event) => {
      if (event.key === "Enter") open();
    });
    return row;
  });
  $("results").querySelector("tbody").replaceChildren(...rows);
  show("no-results", rows.length === 0);
  $("results-prev").disabled = state.resultsOffset === 0;
  $("results-next").disabled = !page.has_more;
  const first = rows.length ? state.resultsOffset + 1 : 0;
  $("results-page-label").textContent = `${first}–${state.resultsOffset + rows.length}${page.has_more ? " of more" : ""}`;
}

function openResult(line) {
  $("result-title").textContent = `${line.custom_id} · ${line.result.type}`;
  $("result-text").textContent = fullText(line.result);
  $("result-json").textContent = JSON.stringify(line, null, 2);
  $("result-dialog").showModal();
}

function filterResults(event) {
  event.preventDefault();
  state.resultsOffset = 0;
  loadResults();
}

// --- start --------------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("sign-in-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", signOut);
  $("submit-form").addEventListener("submit", submitFile);
  $("more-batches").addEventListener("click", () => {
    state.batchLimit = Math.min(1000, state.batchLimit + BATCH_PAGE_SIZE);
    refreshList();
  });
  $("cancel-batch").addEventListener("click", cancelBatch);
  $("delete-batch").addEventListener("click", deleteBatch);
  $("download-results").addEventListener("click", downloadResults);
  $("results-filter").addEventListener("submit", filterResults);
  $("result-type").addEventListener("change", filterResults);
  $("results-prev").addEventListener("click", () => {
    state.resultsOffset = Math.max(0, state.resultsOffset - RESULTS_PAGE_SIZE);
    loadResults();
  });
  $("results-next").addEventListener("click", () => {
    if (!state.resultsHasMore) return;
    state.resultsOffset += RESULTS_PAGE_SIZE;
    loadResults();
  });
  window.addEventListener("hashchange", route);
  route();
});
