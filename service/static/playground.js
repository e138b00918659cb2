// The playground page: next-word suggestions, sentiment with per-token shading and a probability
// chart, and streamed generation, all through the service's own JSON API on this origin.

const $ = (id) => document.getElementById(id);
const KEY_STORAGE = "lstm-serve-api-key";
const DEBOUNCE_MS = 150;
const READY_POLL_MS = 1000;
const SVG_NS = "http://www.w3.org/2000/svg";

let ready = false;

// ---- requests and errors ----

/** An error to show: the service's envelope message, or what went wrong reaching it. */
class ServiceError extends Error {
  constructor(message, { status = 0, type = "", requestId = "" } = {}) {
    super(message);
    Object.assign(this, { status, type, requestId });
  }
}

function authHeaders() {
  const key = sessionStorage.getItem(KEY_STORAGE);
  return key ? { Authorization: `Bearer ${key}` } : {};
}

/** The response of a GET or JSON POST; a ServiceError when it is not 2xx or never arrives. */
async function request(path, { body, signal } = {}) {
  const init = { headers: authHeaders(), signal, cache: "no-store" };
  if (body !== undefined) {
    Object.assign(init, { method: "POST", body: JSON.stringify(body) });
    init.headers["Content-Type"] = "application/json";
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ServiceError(`Cannot reach the service (${error.message}).`);
  }
  if (!response.ok) throw await errorFrom(response);
  return response;
}

async function errorFrom(response) {
  const requestId = response.headers.get("x-request-id") || "";
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not the service's JSON envelope (a proxy's page, say): the status line is all there is
  }
  if (body && typeof body.error === "string") {
    const type = body.error_type || "";
    return new ServiceError(body.error, { status: response.status, type, requestId });
  }
  const message = `HTTP ${response.status} ${response.statusText}`.trim();
  return new ServiceError(message, { status: response.status, requestId });
}

/** Show `error` in `element` (hide it when null); a 401 also opens the API key form. */
function showError(element, error) {
  element.hidden = !error;
  if (!error) {
    element.replaceChildren();
    return;
  }
  const parts = [error.message];
  if (error.status === 401) {
    parts.push(" Enter the key under “API key” at the top of the page.");
    $("api-key").open = true;
  }
  const facts = [
    error.status && `HTTP ${error.status}`,
    error.type,
    error.requestId && `request ${error.requestId}`,
  ];
  const detail = document.createElement("span");
  detail.className = "detail";
  detail.textContent = facts.filter(Boolean).join(" · ");
  element.replaceChildren(...parts, detail);
}

const percent = (p, digits = 1) => `${(p * 100).toFixed(digits)}%`;
const signed = (x) => `${x >= 0 ? "+" : "−"}${Math.abs(x).toFixed(2)}`;

// ---- readiness and models ----

const STATUS_TEXT = {
  checking: "Checking the service…",
  loading: "The service is loading its models; the page is ready when they are.",
  failed: "The service failed to start (the models below or its log say why); requests will fail.",
  unreachable: "Cannot reach the service; trying again…",
};

async function readiness() {
  try {
    const response = await fetch("/health/ready", { cache: "no-store" });
    const body = await response.json();
    return { state: response.ok ? "ready" : body.status, models: body.models || {} };
  } catch {
    return { state: "unreachable", models: {} };
  }
}

async function watchReadiness() {
  for (;;) {
    const { state, models } = await readiness();
    setReady(state, models);
    if (state === "ready" || state === "failed") break;
    await new Promise((resolve) => setTimeout(resolve, READY_POLL_MS));
  }
  loadModels();
}

function setReady(state, models) {
  ready = state === "ready";
  const status = $("service-status");
  status.dataset.state = state;
  const unavailable = Object.keys(models).filter((name) => models[name] !== "ready");
  if (ready) {
    status.textContent = unavailable.length
      ? `Ready, but unavailable: ${unavailable.join(", ")}.`
      : "Ready.";
  } else {
    status.textContent = STATUS_TEXT[state] || `The service says “${state}”.`;
  }
  for (const id of ["next-word-input", "sentiment-submit", "generate-submit"]) {
    $(id).disabled = !ready;
  }
  if (ready) suggest();
}

async function loadModels() {
  const list = $("models-list");
  try {
    const { models } = await (await request("/models")).json();
    list.replaceChildren(...models.map(modelItem));
    if (!models.length) list.replaceChildren(listItem("No models are loaded."));
  } catch (error) {
    const item = listItem("");
    showError(item, error);
    list.replaceChildren(item);
  }
}

function listItem(text) {
  const item = document.createElement("li");
  item.textContent = text;
  return item;
}

function modelItem(model) {
  const item = listItem("");
  const name = document.createElement("strong");
  name.textContent = model.name;
  if (model.status !== "ready") {
    item.classList.add("unavailable");
    item.append(name, ` — unavailable: ${model.error}`);
    return item;
  }
  const facts = [
    model.task,
    `${model.cell.toUpperCase()} ${model.architecture}`,
    `${(model.parameters / 1e6).toFixed(2)}M parameters`,
    model.dataset,
    ...Object.entries(model.metrics || {})
      .filter(([key]) => HEADLINE_METRICS.includes(key))
      .map(([key, value]) => formatMetric(key, value)),
    // the metrics called loss are measured with it; served without it, the loss without it holds
    model.continuous_cache ? `continuous cache over ${model.continuous_cache.window} tokens` : "",
    `${model.device} ${model.dtype}`,
    `version ${model.version}`,
  ];
  item.append(name, ` — ${facts.filter(Boolean).join(" · ")}`);
  return item;
}

// The test metrics a model's line shows; /models (and the model card) has them all: a language
// model's card holds some thirty (its short texts, everyday reviews, the network alone).
const HEADLINE_METRICS = [
  "accuracy",
  "perplexity",
  "top3_accuracy",
  "word_top3_accuracy",
  "bits_per_token",
];

function formatMetric(key, value) {
  const name = key.replaceAll("_", " ");
  if (/accuracy|f1/.test(key)) return `${name} ${percent(value)}`;
  if (Number.isInteger(value)) return `${name} ${value.toLocaleString("en")}`;
  return `${name} ${value.toPrecision(4)}`;
}

// ---- next word ----

const nextWord = { timer: 0, sequence: 0, controller: null };
const CLOSING = /^[.,;:!?%)\]}'’]/; // attaches to the word before it

function scheduleSuggestions() {
  clearTimeout(nextWord.timer);
  nextWord.timer = setTimeout(suggest, DEBOUNCE_MS);
}

/** Ask for the current text's suggestions; an answer to an older text is dropped. */
async function suggest() {
  clearTimeout(nextWord.timer);
  if (!ready) return;
  const sequence = ++nextWord.sequence;
  nextWord.controller?.abort();
  const controller = (nextWord.controller = new AbortController());
  const text = $("next-word-input").value;
  try {
    const body = { text, top_k: 3 };
    const answer = await (await request("/next-word", { body, signal: controller.signal })).json();
    if (sequence !== nextWord.sequence) return;
    showSuggestions(answer);
    showError($("next-word-error"), null);
  } catch (error) {
    if (error.name === "AbortError" || sequence !== nextWord.sequence) return;
    $("next-word-chips").replaceChildren();
    $("next-word-status").textContent = "";
    showError($("next-word-error"), error);
  }
}

function showSuggestions(answer) {
  const prefix = answer.completing ? answer.prefix : null;
  const chips = answer.suggestions.map(({ word, probability }) => {
    const chip = document.createElement("button");
    chip.type = "button";
    chip.className = "chip";
    const chance = document.createElement("span");
    chance.className = "probability";
    chance.textContent = percent(probability);
    chip.append(word, " ", chance);
    chip.setAttribute("aria-label", `${word}, ${percent(probability)}: append`);
    chip.addEventListener("click", () => accept(word, prefix));
    return chip;
  });
  $("next-word-chips").replaceChildren(...chips);
  const words = answer.suggestions.map((s) => s.word).join(", ");
  $("next-word-status").textContent = !words
    ? "No suggestions."
    : prefix
      ? `Completing “${prefix}”: ${words}.`
      : `Next word: ${words}.`;
}

/** Put `word` after the text (in place of the partly typed `prefix`), then suggest again. */
function accept(word, prefix) {
  const input = $("next-word-input");
  let text = input.value;
  if (prefix && text.toLowerCase().endsWith(prefix.toLowerCase())) {
    text = text.slice(0, text.length - prefix.length);
  } else if (CLOSING.test(word)) {
    text = text.trimEnd();
  } else if (text && !/\s$/.test(text)) {
    text += " ";
  }
  input.value = `${text}${word} `;
  input.focus();
  input.setSelectionRange(input.value.length, input.value.length);
  suggest();
}

// ---- sentiment ----

async function classify(event) {
  event.preventDefault();
  const button = $("sentiment-submit");
  if (button.disabled) return;
  const text = $("sentiment-input").value;
  button.disabled = true;
  button.textContent = "Classifying…";
  try {
    const body = { text, explain: true, trajectory: true };
    const answer = await (await request("/sentiment", { body })).json();
    showSentiment(text, answer);
    showError($("sentiment-error"), null);
  } catch (error) {
    $("sentiment-verdict").hidden = $("sentiment-result").hidden = true;
    $("sentiment-meta").textContent = "";
    showError($("sentiment-error"), error);
  } finally {
    button.disabled = !ready;
    button.textContent = "Classify";
  }
}

function showSentiment(text, answer) {
  const label = $("sentiment-label");
  label.textContent = answer.label;
  label.dataset.label = answer.label;
  $("sentiment-score").textContent = percent(answer.score);
  const cut = answer.truncated
    ? "; the text is longer than the model's window, so only its start and end were read"
    : "";
  $("sentiment-meta").textContent =
    `Read ${answer.tokens} of ${answer.total_tokens} tokens${cut}. ` +
    `Model ${answer.model} (${answer.model_version}).`;
  const explanation = answer.explanation || [];
  $("sentiment-tokens").replaceChildren(shadedText(text, explanation));
  $("sentiment-summary").textContent = strongestTokens(explanation);
  $("sentiment-verdict").hidden = false;
  $("sentiment-result").hidden = false; // before drawing: the chart takes the panel's width
  const labels = Object.keys(answer.probabilities);
  const charted = labels[labels.length - 1]; // the label explanations push towards
  $("sentiment-chart-label").textContent = charted;
  drawTrajectory($("sentiment-chart"), answer.trajectory || [], charted, text);
}

/** The text with each token read tinted by its push: blue towards positive, orange negative. */
function shadedText(text, explanation) {
  const fragment = document.createDocumentFragment();
  const largest = Math.max(1e-9, ...explanation.map((t) => Math.abs(t.contribution)));
  let position = 0;
  for (const token of explanation) {
    if (token.end <= token.start || token.start < position) continue;
    fragment.append(text.slice(position, token.start));
    const span = document.createElement("span");
    span.className = `token ${token.contribution >= 0 ? "positive" : "negative"}`;
    span.style.setProperty("--weight", (Math.abs(token.contribution) / largest).toFixed(3));
    span.title = `${token.token}: ${signed(token.contribution)}`;
    span.textContent = text.slice(token.start, token.end);
    fragment.append(span);
    position = token.end;
  }
  fragment.append(text.slice(position));
  return fragment;
}

function strongestTokens(explanation) {
  const ranked = [...explanation].sort((a, b) => b.contribution - a.contribution);
  const list = (tokens) => tokens.map((t) => `“${t.token}” ${signed(t.contribution)}`).join(", ");
  const positive = ranked.filter((t) => t.contribution > 0).slice(0, 3);
  const negative = ranked.filter((t) => t.contribution < 0).reverse().slice(0, 3);
  const parts = [];
  if (positive.length) parts.push(`Strongest towards positive: ${list(positive)}.`);
  if (negative.length) parts.push(`Strongest towards negative: ${list(negative)}.`);
  return parts.join(" ");
}

function svg(name, attributes = {}, text = "") {
  const element = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
  if (text) element.textContent = text;
  return element;
}

/** A line chart of the label's probability after each prefix (x: tokens read, y: 0–100%). */
function drawTrajectory(container, points, label, text) {
  if (!points.length) {
    container.textContent = "This model gave no trajectory.";
    return;
  }
  const width = Math.max(container.clientWidth, 280);
  const height = 150;
  const box = { left: 40, right: 12, top: 10, bottom: 30 };
  const total = points[points.length - 1].tokens;
  const x = (tokens) => box.left + (tokens / total) * (width - box.left - box.right);
  const y = (p) => box.top + (1 - p) * (height - box.top - box.bottom);
  const values = points.map((point) => point.probabilities[label]);
  const chart = svg("svg", {
    viewBox: `0 0 ${width} ${height}`,
    role: "img",
    "aria-labelledby": "trajectory-title trajectory-description",
  });
  const summary =
    `${percent(values[0])} after ${points[0].tokens} tokens, ` +
    `${percent(values[values.length - 1])} after all ${total}; ` +
    `lowest ${percent(Math.min(...values))}, highest ${percent(Math.max(...values))}.`;
  chart.append(
    svg("title", { id: "trajectory-title" }, `Probability of ${label} as the text is read`),
    svg("desc", { id: "trajectory-description" }, summary),
  );
  for (const p of [0, 0.5, 1]) {
    const grid = { x1: box.left, x2: width - box.right, y1: y(p), y2: y(p) };
    chart.append(
      svg("line", { class: p === 0.5 ? "grid middle" : "grid", ...grid }),
      axisLabel(box.left - 6, y(p) + 4, percent(p, 0), "end"),
    );
  }
  chart.append(
    axisLabel(box.left, height - 8, "0", "start"),
    axisLabel(width - box.right, height - 8, `${total} tokens read`, "end"),
  );
  const line = points.map((point, i) => `${x(point.tokens).toFixed(1)},${y(values[i]).toFixed(1)}`);
  chart.append(svg("polyline", { class: "line", points: line.join(" ") }));
  points.forEach((point, i) => {
    const radius = i === points.length - 1 ? 4 : 2.5;
    const dot = svg("circle", { class: "dot", cx: x(point.tokens), cy: y(values[i]), r: radius });
    const words = text.slice(Math.max(0, point.end - 40), point.end).trimStart();
    const tip = `${percent(values[i])} after ${point.tokens} tokens (“…${words}”)`;
    dot.append(svg("title", {}, tip));
    chart.append(dot);
  });
  container.replaceChildren(chart);
}

function axisLabel(x, y, text, anchor) {
  return svg("text", { class: "axis", x, y, "text-anchor": anchor }, text);
}

// ---- generate ----

const generation = { controller: null, tokens: 0 };

function generateRequest() {
  const number = (id) => $(id).valueAsNumber;
  const body = {
    prompt: $("generate-prompt").value,
    temperature: number("generate-temperature"),
    top_k: number("generate-top-k"),
    top_p: number("generate-top-p"),
    max_new_tokens: number("generate-max-tokens"),
  };
  if ($("generate-seed").value !== "") body.seed = number("generate-seed");
  return body;
}

async function generate(event) {
  event.preventDefault();
  if (generation.controller || $("generate-submit").disabled) return;
  const body = generateRequest();
  const controller = (generation.controller = new AbortController());
  generation.tokens = 0;
  setGenerating(true);
  const output = document.createTextNode("");
  $("generate-prompt-echo").textContent = body.prompt;
  $("generate-text").replaceChildren(output);
  $("generate-output").hidden = false;
  $("generate-status").textContent = "Generating…";
  showError($("generate-error"), null);
  try {
    const response = await request("/generate/stream", { body, signal: controller.signal });
    const done = await readStream(response.body, output, controller.signal);
    const reason = done.finish_reason === "length" ? "the limit" : "a stop string";
    $("generate-status").textContent =
      `Done: ${done.tokens} tokens (${reason}), seed ${done.seed}: ` +
      "the same seed and settings give the same text.";
  } catch (error) {
    if (controller.signal.aborted) {
      $("generate-status").textContent = `Stopped after ${generation.tokens} tokens.`;
    } else {
      $("generate-status").textContent = "";
      showError($("generate-error"), error);
    }
  } finally {
    generation.controller = null;
    setGenerating(false);
  }
}

/** Append each token event's text to `output`; the `done` event's totals, or a ServiceError. */
async function readStream(stream, output, signal) {
  const scroller = $("generate-output");
  for await (const [name, data] of serverSentEvents(stream, signal)) {
    if (name === "token") {
      output.appendData(data.text);
      generation.tokens += 1;
      scroller.scrollTop = scroller.scrollHeight;
    } else if (name === "done") {
      return data;
    } else if (name === "error") {
      throw new ServiceError(data.error, { type: data.error_type });
    }
  }
  throw new ServiceError("The stream ended before the generation finished.");
}

/** [event name, parsed data] for each Server-Sent Event of a fetch() body, until `signal` aborts
 * (then it throws the signal's reason). A stop cancels the reader itself: a pending read ends at
 * once, whether or not the browser also errors the body of the aborted fetch, and when. */
async function* serverSentEvents(stream, signal) {
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  const stop = () => reader.cancel(signal.reason).catch(() => {});
  signal.addEventListener("abort", stop, { once: true });
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      signal.throwIfAborted();
      if (done) return;
      buffer = (buffer + value).replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const event = parseEvent(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        if (event) yield event;
      }
    }
  } finally {
    signal.removeEventListener("abort", stop);
    reader.cancel().catch(() => {}); // already finished or aborted: nothing left to release
  }
}

function parseEvent(frame) {
  let name = "message";
  const data = [];
  for (const line of frame.split("\n")) {
    if (line.startsWith("event:")) name = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  }
  return data.length ? [name, JSON.parse(data.join("\n"))] : null;
}

function setGenerating(running) {
  $("generate-submit").disabled = running || !ready;
  $("generate-stop").disabled = !running;
  $("generate-output").setAttribute("aria-busy", String(running));
  if (!running && document.activeElement === $("generate-stop")) $("generate-submit").focus();
}

// ---- API key ----

function showKeyState() {
  const set = Boolean(sessionStorage.getItem(KEY_STORAGE));
  $("api-key").querySelector("summary").textContent = set ? "API key (set)" : "API key";
}

function saveKey(event) {
  event.preventDefault();
  const key = $("api-key-input").value.trim();
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
  $("api-key-note").textContent = key ? "Saved for this tab." : "Cleared.";
  showKeyState();
  suggest();
}

function clearKey() {
  $("api-key-input").value = "";
  sessionStorage.removeItem(KEY_STORAGE);
  $("api-key-note").textContent = "Cleared.";
  showKeyState();
}

// ---- wiring ----

function submitOnCtrlEnter(textarea, form) {
  textarea.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
}

$("next-word-input").addEventListener("input", scheduleSuggestions);
$("sentiment-form").addEventListener("submit", classify);
$("generate-form").addEventListener("submit", generate);
$("generate-stop").addEventListener("click", () => generation.controller?.abort());
$("api-key-form").addEventListener("submit", saveKey);
$("api-key-clear").addEventListener("click", clearKey);
submitOnCtrlEnter($("sentiment-input"), $("sentiment-form"));
submitOnCtrlEnter($("generate-prompt"), $("generate-form"));
$("api-key-input").value = sessionStorage.getItem(KEY_STORAGE) || "";
showKeyState();
setReady("checking", {});
watchReadiness();
