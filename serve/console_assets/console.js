// The rayfit console: a client of the app's own API (serve/console.py). Every number it shows comes from a /v1 call
// made with the key the user typed, kept in sessionStorage: never in a URL, never logged.
const ROOT = location.pathname.replace(/\/console\/?$/, "");
const STORE = "rayfit.console.key";
const FINISHED = ["succeeded", "failed", "cancelled"];
const $ = (sel) => document.querySelector(sel);
let poll = null; // the one timer of the view shown; a new view stops it

class ApiFail extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, opts = {}) {
  const key = sessionStorage.getItem(STORE);
  const headers = { ...(opts.headers || {}), ...(key ? { Authorization: `Bearer ${key}` } : {}) };
  const res = await fetch(ROOT + path, { ...opts, headers });
  if (!res.ok) {
    let message = res.statusText;
    try { message = (await res.json()).error.message; } catch { /* not JSON: keep the status text */ }
    throw new ApiFail(res.status, message);
  }
  return res;
}
const get = async (path) => (await api(path)).json();
const send = async (method, path, body) =>
  (await api(path, { method, headers: { "Content-Type": "application/json" }, body: body && JSON.stringify(body) })).json();

// h("td", {class: "x"}, "text", child): DOM built from text nodes, so nothing from the API is parsed as HTML.
function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c));
  return node;
}
const table = (id, head, rows) => h("table", { id }, h("tr", {}, head.map((t) => h("th", {}, t))), rows);
const when = (t) => (t ? new Date(t * 1000).toLocaleString() : "");
const num = (x, d = 4) => (typeof x === "number" ? Number(x.toPrecision(d)) : x ?? "");
const show = (...nodes) => $("#view").replaceChildren(...nodes);
const flash = (text) => { $("#flash").textContent = text || ""; };

function confirmThen(question, action) {
  return async () => {
    if (!window.confirm(question)) return;
    try { await action(); flash(""); route(); } catch (e) { flash(e.message); }
  };
}

// Run fn now and every `ms` (a number, or a function giving the next wait) after it finishes, until it returns false or
// another view starts. A hidden tab (another tab in front, a minimised window) asks nothing: the poll waits and runs
// again the moment the tab is shown.
function every(ms, fn) {
  const mine = { timer: null, waiting: false };
  mine.tick = async () => {
    mine.timer = null;
    if (poll !== mine) return;
    if (document.hidden) { mine.waiting = true; return; }
    let again = true;
    try { again = (await fn()) !== false; } catch (e) { flash(e.message); }
    if (again && poll === mine) mine.timer = setTimeout(mine.tick, typeof ms === "function" ? ms() : ms);
  };
  poll = mine;
  mine.tick();
}
document.addEventListener("visibilitychange", () => {
  if (!document.hidden && poll?.waiting) { poll.waiting = false; poll.tick(); }
});

// Key entry

function askKey(message) {
  $("#key-form").hidden = false;
  $("#forget").hidden = true;
  $("#key-error").textContent = message || "";
  show();
}

$("#key-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(STORE, $("#key").value.trim());
  $("#key").value = "";
  try {
    await get("/v1/models");
  } catch (e) {
    sessionStorage.removeItem(STORE);
    return askKey(e.status === 401 ? "That key is not accepted here." : e.message);
  }
  $("#key-form").hidden = true;
  route();
});
$("#forget").addEventListener("click", () => { sessionStorage.removeItem(STORE); askKey(); });

// Jobs

// A running job's step/total, from its newest metrics event. The list asks for it once, then again only when the job's
// estimated_finish has moved (the API derives it from that same newest metrics event; a job still waiting for its
// first step has none) and at most every PROGRESS_EVERY_MS per job: ten running jobs cost the app a few calls a
// minute on top of the list itself, not one per job per poll (benchmarks/console_load.py).
const PROGRESS_EVERY_MS = 30000;
// The list is asked for every 10 s while some job's status changes, and twice as rarely after each poll that changed
// none, up to every 40 s: jobs run for minutes to hours, and the job page follows one job every 2 s.
const LIST_FIRST_MS = 10000;
const LIST_MAX_MS = 40000;
async function progressOf(job, seen) {
  if (job.status !== "running") { seen.delete(job.id); return ""; }
  const last = seen.get(job.id);
  const stale = last && Date.now() - last.at >= PROGRESS_EVERY_MS && (last.eta !== job.estimated_finish || (!job.estimated_finish && last.text));
  if (last && !stale) return last.text;
  const events = (await get(`/v1/fine_tuning/jobs/${job.id}/events?limit=10`)).data;
  const m = events.find((e) => e.type === "metrics");
  const text = m ? `${m.data.step}/${m.data.total_steps}` : "";
  seen.set(job.id, { eta: job.estimated_finish, at: Date.now(), text });
  return text;
}

function jobActions(job) {
  const act = (label, verb) =>
    h("button", { class: label.toLowerCase(), onclick: confirmThen(`${label} ${job.id}?`, () => send("POST", `/v1/fine_tuning/jobs/${job.id}/${verb}`)) }, label);
  return [
    ["queued", "running", "paused", "validating_files"].includes(job.status) ? act("Cancel", "cancel") : null,
    ["queued", "running"].includes(job.status) ? act("Pause", "pause") : null,
    job.status === "paused" ? act("Resume", "resume") : null,
  ];
}

function jobsView() {
  const filter = h("select", { id: "status-filter" },
    ["all", "queued", "running", "paused", "succeeded", "failed", "cancelled"].map((s) => h("option", { value: s }, s)));
  const body = h("tbody");
  filter.value = new URLSearchParams(location.hash.split("?")[1] || "").get("status") || "all";
  filter.addEventListener("change", () => { location.hash = filter.value === "all" ? "#/jobs" : `#/jobs?status=${filter.value}`; });
  show(h("h2", {}, "Fine-tuning jobs"), h("label", {}, "Status ", filter),
    table("jobs", ["Job", "Status", "Base", "Suffix", "Progress", "ETA", "Created", ""], body));
  const seen = new Map();
  let wait = LIST_FIRST_MS;
  let statuses = "";
  every(() => wait, async () => {
    const jobs = (await get("/v1/fine_tuning/jobs?limit=100")).data.filter((j) => filter.value === "all" || j.status === filter.value);
    const now = jobs.map((j) => `${j.id}:${j.status}`).join(" ");
    wait = now === statuses ? Math.min(2 * wait, LIST_MAX_MS) : LIST_FIRST_MS;
    statuses = now;
    const progress = await Promise.all(jobs.map((j) => progressOf(j, seen)));
    body.replaceChildren(...jobs.map((j, i) => h("tr", { "data-job": j.id },
      h("td", {}, h("a", { href: `#/jobs/${j.id}` }, j.id)), h("td", { class: "status" }, j.status), h("td", {}, j.model),
      h("td", {}, j.suffix ?? ""), h("td", { class: "progress" }, progress[i]), h("td", {}, when(j.estimated_finish)),
      h("td", {}, when(j.created_at)), h("td", {}, jobActions(j)))));
    if (!jobs.length) body.append(h("tr", {}, h("td", { colspan: 8, class: "empty" }, "No jobs.")));
  });
}

async function newEvents(id, known) {
  // The API lists newest first; page back until an event already shown.
  let after = null;
  for (;;) {
    const page = await get(`/v1/fine_tuning/jobs/${id}/events?limit=100${after ? `&after=${after}` : ""}`);
    const fresh = page.data.filter((e) => !known.has(e.id));
    fresh.forEach((e) => known.set(e.id, e));
    if (!page.has_more || fresh.length < page.data.length || !page.data.length) return;
    after = page.data[page.data.length - 1].id;
  }
}

function chart(div, traces, title, ytitle, extra = {}) {
  const layout = { title: { text: title }, height: 280, margin: { t: 40, r: 60, b: 40, l: 60 },
    xaxis: { title: { text: "step" } }, yaxis: { title: { text: ytitle } }, legend: { orientation: "h" }, ...extra };
  window.Plotly.react(div, traces, layout, { displaylogo: false, responsive: true, staticPlot: false });
}

function metricTrace(metrics, field, name, more = {}) {
  const pts = metrics.filter((m) => typeof m[field] === "number");
  return { x: pts.map((m) => m.step), y: pts.map((m) => m[field]), name, mode: "lines+markers", type: "scatter", ...more };
}

// GRPO's metrics events carry `reward`, `reward_<grader>`, `reward_std`, `kl` and `completion_length`: whenever any
// event has a reward* key, the job page draws the rewards on one chart and KL with completion length on another.
function rewardCharts(metrics, box) {
  const keys = [...new Set(metrics.flatMap((m) => Object.keys(m)))];
  const rewards = keys.filter((k) => k.startsWith("reward")).sort((a, b) => (a === "reward" ? -1 : b === "reward" ? 1 : a < b ? -1 : 1));
  box.hidden = !rewards.length;
  if (!rewards.length) return;
  chart($("#reward-chart"), rewards.map((k) => metricTrace(metrics, k, k.replace(/_/g, " "))), "", "reward");
  chart($("#policy-chart"), [metricTrace(metrics, "kl", "KL"), metricTrace(metrics, "completion_length", "completion length", { yaxis: "y2" })],
    "", "KL", { yaxis2: { title: { text: "tokens" }, overlaying: "y", side: "right" } });
}

function dataReport(r) {
  if (!r) return h("p", { class: "empty" }, "Not reported yet.");
  const dropped = Object.entries(r.dropped || {});
  return h("div", {},
    h("p", { id: "rows" }, `${r.rows_kept} of ${r.rows_read} rows kept, ${r.rows_dropped ?? 0} dropped; ${r.train_tokens ?? "?"} training tokens.`),
    dropped.length ? table("dropped", ["Dropped because", "Rows"], dropped.map(([k, v]) => h("tr", {}, h("td", {}, k), h("td", {}, v)))) : null);
}

function evaluation(evalEvent, gateEvent, samples) {
  if (!evalEvent) return h("p", { class: "empty" }, "No base-vs-tuned evaluation in this job (yet).");
  const rows = Object.entries(evalEvent.data.evaluation).map(([k, v]) => h("tr", {}, h("td", {}, k), h("td", {}, num(v.base)), h("td", {}, num(v.tuned))));
  const gate = gateEvent ? h("p", { id: "gate", class: gateEvent.data.gate.passed ? "ok" : "error" }, gateEvent.message) : h("p", { id: "gate" }, "No gate set.");
  const side = (samples || []).map((s) => h("tr", {}, h("td", {}, s.prompt), h("td", {}, s.reference), h("td", {}, s.base), h("td", {}, s.tuned)));
  return h("div", {}, table("evaluation", ["Metric", "Base", "Tuned"], rows), gate,
    side.length ? table("samples", ["Prompt", "Reference", "Base", "Tuned"], side) : null);
}

function jobView(id) {
  const known = new Map();
  const parts = Object.fromEntries(["head", "curves", "lr", "report", "plan", "checkpoints", "eval", "events"].map((k) => [k, h("div", { id: `job-${k}` })]));
  const rewards = h("div", { id: "rewards", hidden: true }, h("h3", {}, "Reward"), h("div", { id: "reward-chart", class: "chart" }),
    h("h3", {}, "KL and completion length"), h("div", { id: "policy-chart", class: "chart" }));
  show(h("h2", {}, id), parts.head, h("h3", {}, "Loss"), h("div", { id: "loss-chart", class: "chart" }), rewards,
    h("h3", {}, "Learning rate"), h("div", { id: "lr-chart", class: "chart" }), h("h3", {}, "Data report"), parts.report,
    h("h3", {}, "Plan"), parts.plan, h("h3", {}, "Checkpoints"), parts.checkpoints, h("h3", {}, "Base vs tuned"), parts.eval,
    h("h3", {}, "Events"), parts.events);
  let samples = null;
  let ckpts = null;
  every(2000, async () => {
    let job;
    try { job = await get(`/v1/fine_tuning/jobs/${id}`); } catch (e) {
      if (e.status !== 404) throw e;
      show(h("p", { id: "not-found", class: "error" }, e.message));
      return false;
    }
    const before = known.size;
    await newEvents(id, known);
    const events = [...known.values()].sort((a, b) => (a.id < b.id ? -1 : 1));
    const metrics = events.filter((e) => e.type === "metrics").map((e) => e.data);
    const steps = metrics.length ? metrics[metrics.length - 1] : null;
    parts.head.replaceChildren(h("p", {},
      "Status ", h("b", { id: "job-status" }, job.status), ` · base ${job.model} · suffix ${job.suffix ?? ""}`,
      steps ? ` · step ${steps.step}/${steps.total_steps}` : "", job.estimated_finish ? ` · ETA ${when(job.estimated_finish)}` : "",
      job.fine_tuned_model ? h("span", {}, " · model ", h("code", { id: "ft-model" }, job.fine_tuned_model)) : "",
      job.error ? h("span", { class: "error" }, ` · ${job.error.message}`) : ""), h("p", {}, jobActions(job)));
    chart($("#loss-chart"), [metricTrace(metrics, "train_loss", "train loss"), metricTrace(metrics, "valid_loss", "eval loss")], "", "loss");
    // From zero up: a constant rate (no schedule) would otherwise sit on an axis centred on it, reading as noise.
    const lr = metricTrace(metrics, "learning_rate", "learning rate");
    chart($("#lr-chart"), [lr], "", "lr", { yaxis: { title: { text: "lr" }, range: [0, 1.15 * Math.max(0, ...lr.y) || 1], exponentformat: "e" } });
    rewardCharts(metrics, rewards);
    const find = (pred) => [...events].reverse().find(pred);
    parts.report.replaceChildren(dataReport(find((e) => e.data?.data_report)?.data.data_report));
    const plan = find((e) => e.data?.plan);
    parts.plan.replaceChildren(plan ? h("pre", { id: "plan" }, plan.message.replace(/^Plan:\n/, "")) : h("p", { class: "empty" }, "Not planned yet."));
    // Checkpoints are recorded before the event that announces them (status, step): ask again only after new events.
    if (ckpts === null || known.size !== before) ckpts = (await get(`/v1/fine_tuning/jobs/${id}/checkpoints?limit=100`)).data;
    parts.checkpoints.replaceChildren(ckpts.length ? table("checkpoints", ["Step", "Train loss", "Model name"], ckpts.map((c) =>
      h("tr", {}, h("td", {}, c.step_number), h("td", {}, num(c.metrics.train_loss)), h("td", {}, h("code", {}, c.fine_tuned_model_checkpoint)))))
      : h("p", { class: "empty" }, "None yet."));
    if (job.status === "succeeded" && samples === null && job.result_files.length) {
      const results = await get(`/v1/files/${job.result_files[0]}/content`);
      samples = results.evaluation?.samples || [];
    }
    parts.eval.replaceChildren(evaluation(find((e) => e.data?.evaluation), find((e) => e.data?.gate), samples));
    parts.events.replaceChildren(h("ol", { id: "events", reversed: true }, [...events].reverse().slice(0, 30).map((e) =>
      h("li", { class: e.level }, `${when(e.created_at)} ${e.message.split("\n")[0]}`))));
    return !FINISHED.includes(job.status);
  });
}

// New job

async function bases() {
  const models = (await get("/v1/models")).data;
  return models.map((m) => m.id).filter((id) => !id.includes(":ckpt-step-"));
}

function newJobView() {
  const file = h("input", { id: "upload", type: "file", accept: ".jsonl,.json" });
  const verdict = h("div", { id: "upload-verdict" });
  const base = h("select", { id: "base" });
  const method = h("select", { id: "method" }, h("option", { value: "supervised" }, "supervised (SFT)"), h("option", { value: "dpo" }, "dpo"));
  const field = (id, value) => h("input", { id, value, size: 8 });
  const fields = { n_epochs: field("n_epochs", "auto"), batch_size: field("batch_size", "auto"), learning_rate_multiplier: field("lr_multiplier", "auto") };
  const suffix = h("input", { id: "suffix", placeholder: "optional" });
  // Base vs tuned at the end: rows held out of the training file, and the gate (`evaluate` in docs/merge-evaluate.md).
  const evaluate = h("input", { id: "evaluate", type: "checkbox" });
  const heldOut = h("input", { id: "eval-split", value: "0.1", size: 5 });
  const maxRegression = h("input", { id: "max-regression", value: "0", size: 5 });
  const estimate = h("div", { id: "estimate" });
  let training = null;

  file.addEventListener("change", async () => {
    training = null;
    verdict.replaceChildren(h("p", {}, "Checking…"));
    const form = new FormData();
    form.append("purpose", "fine-tune");
    form.append("file", file.files[0]);
    try {
      const up = await (await api("/v1/files", { method: "POST", body: form })).json();
      training = up.id;
      verdict.replaceChildren(h("p", { class: "ok", id: "upload-ok" }, `${up.filename}: accepted as ${up.id} (${up.bytes} bytes).`));
      await plan();
    } catch (e) {
      verdict.replaceChildren(h("p", { class: "error", id: "upload-error" }, e.message));
    }
  });
  const body = () => {
    const hyper = {};
    for (const [k, input] of Object.entries(fields)) {
      const v = input.value.trim();
      if (v !== "auto" && v !== "") hyper[k] = Number(v); // left out is "auto": the API resolves it (shown by the plan)
    }
    const gate = maxRegression.value.trim();
    const spec = { data: { eval_split: Number(heldOut.value) }, evaluate: { enabled: true, max_regression: gate === "" ? null : Number(gate) } };
    return { model: base.value, training_file: training, ...(suffix.value.trim() ? { suffix: suffix.value.trim() } : {}),
      method: { type: method.value, [method.value]: { hyperparameters: hyper } }, ...(evaluate.checked ? { rayfit: { spec } } : {}) };
  };
  const listed = bases().then((ids) => base.replaceChildren(...ids.map((id) => h("option", { value: id }, id))));
  async function plan() {
    await listed;
    if (!training) return estimate.replaceChildren(h("p", { class: "empty" }, "Upload a training file first."));
    try {
      const p = await send("POST", "/v1/rayfit/plan", body());
      const resolved = Object.entries(p.hyperparameters).map(([k, v]) => h("tr", {}, h("td", {}, k), h("td", { "data-hyper": k }, v ?? "")));
      estimate.replaceChildren(table("resolved", ["Hyperparameter", "Resolved"], resolved), h("pre", { id: "plan-text" }, p.text));
    } catch (e) {
      estimate.replaceChildren(h("p", { class: "error", id: "plan-error" }, e.message));
    }
  }
  const create = h("button", { id: "create", onclick: async () => {
    try {
      const job = await send("POST", "/v1/fine_tuning/jobs", body());
      location.hash = `#/jobs/${job.id}`;
    } catch (e) { flash(e.message); }
  } }, "Create job");
  [base, method, ...Object.values(fields), evaluate, heldOut, maxRegression].forEach((i) => i.addEventListener("change", plan));
  show(h("h2", {}, "New fine-tuning job"),
    h("p", {}, h("label", {}, "Training file (JSONL) ", file)), verdict,
    h("p", {}, h("label", {}, "Base ", base), " ", h("label", {}, "Method ", method), " ", h("label", {}, "Suffix ", suffix)),
    h("p", {}, Object.entries(fields).map(([k, i]) => h("label", {}, `${k} `, i, " "))),
    h("p", {}, h("label", {}, evaluate, " Compare base and tuned at the end on a held-out share of "), heldOut,
      h("label", {}, " of the rows; fail the job (the gate) when tuned eval loss is worse than base by more than "), maxRegression,
      " of base (empty: no gate)"),
    h("button", { id: "estimate-btn", onclick: plan }, "Estimate"), estimate, create);
  listed.catch((e) => flash(e.message));
}

// Models and aliases

async function modelsView() {
  const [models, aliases] = await Promise.all([get("/v1/models"), get("/v1/rayfit/aliases")]);
  const ids = models.data.map((m) => m.id);
  const rows = models.data.map((m) => h("tr", { "data-model": m.id },
    h("td", {}, h("code", {}, m.id)), h("td", {}, m.id.startsWith("ft:") ? "fine-tuned" : m.parent ? "adapter" : "base"),
    h("td", {}, m.parent ?? ""), h("td", {}, m.id.startsWith("ft:") ? h("a", { href: `#/jobs/${m.id.split(":").pop()}` }, m.id.split(":").pop()) : ""),
    h("td", {}, m.owned_by), h("td", {}, when(m.created)),
    h("td", {}, m.id.startsWith("ft:") && !m.id.includes(":ckpt-step-")
      ? h("button", { class: "unpublish", onclick: confirmThen(`Unpublish ${m.id}?`, () => send("DELETE", `/v1/models/${m.id}`)) }, "Unpublish") : "")));
  const aliasRows = aliases.data.map((a) => h("tr", { "data-alias": a.name },
    h("td", {}, a.name), h("td", { class: "current" }, a.model), h("td", { class: "previous" }, a.previous ?? ""), h("td", {}, when(a.updated_at)),
    h("td", {}, a.previous ? h("button", { class: "rollback", onclick: confirmThen(`Roll ${a.name} back to ${a.previous}?`,
      () => send("POST", `/v1/rayfit/aliases/${a.name}/rollback`)) }, "Roll back") : "",
    h("button", { class: "delete-alias", onclick: confirmThen(`Delete alias ${a.name}?`, () => send("DELETE", `/v1/rayfit/aliases/${a.name}`)) }, "Delete"))));
  const name = h("input", { id: "alias-name", placeholder: "alias, e.g. prod" });
  // A checkpoint can be promoted too: its callable name comes from its job's checkpoint list.
  const tuned = ids.filter((id) => id.startsWith("ft:"));
  const ckpts = await Promise.all(tuned.map(async (id) =>
    (await get(`/v1/fine_tuning/jobs/${id.split(":").pop()}/checkpoints?limit=100`)).data.map((c) => c.fine_tuned_model_checkpoint)));
  const target = h("select", { id: "alias-target" }, [...tuned, ...ckpts.flat()].map((id) => h("option", { value: id }, id)));
  const point = h("button", { id: "alias-point", onclick: () => confirmThen(`Point ${name.value} at ${target.value}?`,
    () => send("PUT", `/v1/rayfit/aliases/${encodeURIComponent(name.value)}`, { model: target.value }))() }, "Point alias");
  show(h("h2", {}, "Models"), table("models", ["Model", "Kind", "Parent", "Job", "Owner", "Created", ""], rows),
    h("h2", {}, "Aliases"), table("aliases", ["Alias", "Current", "Previous", "Updated", ""], aliasRows),
    h("p", {}, name, " → ", target, " ", point));
}

// Playground

async function stream(model, prompt, out) {
  out.textContent = "";
  out.removeAttribute("data-done");
  try {
    const res = await api("/v1/chat/completions", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ model, stream: true, temperature: 0, max_tokens: 32, messages: [{ role: "user", content: prompt }] }) });
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      const events = buffer.split("\n\n");
      buffer = events.pop();
      for (const ev of events) {
        const data = ev.replace(/^data: /, "").trim();
        if (!data || data === "[DONE]") continue;
        out.textContent += JSON.parse(data).choices[0]?.delta?.content ?? "";
      }
    }
  } catch (e) {
    out.textContent = `error: ${e.message}`;
  }
  out.setAttribute("data-done", "true");
}

async function playgroundView() {
  const models = (await get("/v1/models")).data.map((m) => m.id);
  const aliases = (await get("/v1/rayfit/aliases")).data.map((a) => a.name);
  const choices = [...models, ...aliases];
  const want = new URLSearchParams(location.hash.split("?")[1] || "");
  const pick = (id, value) => {
    const s = h("select", { id }, choices.map((m) => h("option", { value: m }, m)));
    if (value && choices.includes(value)) s.value = value;
    return s;
  };
  const a = pick("model-a", want.get("a") || models[0]);
  const b = pick("model-b", want.get("b") || models[models.length - 1]);
  const prompt = h("textarea", { id: "prompt", rows: 3, cols: 80 });
  const outA = h("pre", { id: "out-a", class: "answer" });
  const outB = h("pre", { id: "out-b", class: "answer" });
  const ask = h("button", { id: "ask", onclick: () => Promise.all([stream(a.value, prompt.value, outA), stream(b.value, prompt.value, outB)]) }, "Ask both");
  show(h("h2", {}, "Playground"), prompt, h("p", {}, ask),
    h("div", { class: "side" }, h("section", {}, a, outA), h("section", {}, b, outB)));
}

// Routing: #/jobs, #/jobs/<id>, #/new, #/models, #/playground

function route() {
  if (poll) clearTimeout(poll.timer);
  poll = null;
  flash("");
  if (!sessionStorage.getItem(STORE)) return askKey();
  $("#key-form").hidden = true;
  $("#forget").hidden = false;
  const [path] = (location.hash.slice(1) || "/jobs").split("?");
  const job = path.match(/^\/jobs\/(ftjob-[\w-]+)$/);
  const views = { "/jobs": jobsView, "/new": newJobView, "/models": modelsView, "/playground": playgroundView };
  const view = job ? () => jobView(job[1]) : views[path] || jobsView;
  Promise.resolve(view()).catch((e) => (e.status === 401 ? askKey("That key is no longer accepted.") : flash(e.message)));
}

window.addEventListener("hashchange", route);
route();
