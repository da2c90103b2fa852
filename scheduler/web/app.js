// The explorer: sign in, show the current render large, click it to zoom in there, follow jobs
// live from the event stream, browse the gallery. The page uses the same HTTP API as fractalctl.
// The view (kind, exact centre, zoom, colours, iterations when set) lives in the page's address,
// so a link, a reload or the back button returns to it.
import { Api, ApiError, isFinished } from "./api.js";
import { coordinate, KIND_NAMES, describe, zoomText } from "./format.js";
import { Gallery, Images } from "./gallery.js";
import { autoIterations, pixelAt, renderSize, scaledZoom, viewFromUrl, viewUrl, zoomedAt } from "./view.js";

const $ = (id) => document.getElementById(id);
const SESSION_KEY = "fractal-explorer.session";
const GALLERY_SIZE = 24;
// the fields one view hands to the next render; the rest keep the service's defaults, and
// iterations follow the form (see iterations())
const VIEW_FIELDS = ["kind", "width", "height", "center_x", "center_y", "zoom", "julia_re", "julia_im",
  "colormap"];

const state = {
  api: new Api(),
  images: null,
  gallery: null,
  stream: null,           // AbortController of the event stream
  shown: null,            // the job whose image is in the view (clicks zoom into it)
  target: null,           // the job_id the view waits for (its progress is shown)
  cancelled: new Set(),   // jobs cancelled from this page: their end is no error
};

// --- errors as sentences ------------------------------------------------------------------------

function showError(sentence) {
  $("error").textContent = sentence;
  $("error").hidden = false;
}

// Runs an action; a refusal becomes a sentence on the page, an ended session the sign-in form.
async function attempt(action) {
  $("error").hidden = true;
  try {
    await action();
  } catch (err) {
    if (err.name === "AbortError") return;
    if (err instanceof ApiError && err.status === 401 && state.api.token) {
      signOut();
      showError(`Your session has ended (${err.message.replace(/\.$/, "")}). Sign in again.`);
    } else if (err instanceof ApiError) {
      showError(err.message);
    } else {
      console.warn(err);
      showError("Something went wrong in the page; reload it to try again.");
    }
  }
}

// --- session -------------------------------------------------------------------------------------

function credentials() {
  const form = $("auth-form");
  const username = form.username.value.trim();
  const password = form.password.value;
  if (!username || !password) throw new ApiError(0, "Enter a username and a password.");
  return { username, password };
}

async function signIn() {
  const { username, password } = credentials();
  const token = await state.api.signIn(username, password);
  const session = { username, token: token.access_token, expiresAt: Date.now() + token.expires_in * 1000 };
  localStorage.setItem(SESSION_KEY, JSON.stringify(session));
  await start(session);
}

async function signUp() {
  const { username, password } = credentials();
  await state.api.signUp(username, password);
  await signIn();
}

function savedSession() {
  try {
    const session = JSON.parse(localStorage.getItem(SESSION_KEY));
    return session && session.expiresAt > Date.now() ? session : null;
  } catch {
    return null;
  }
}

function signOut() {
  localStorage.removeItem(SESSION_KEY);
  state.stream?.abort();
  state.images?.clear();
  Object.assign(state, { api: new Api(), shown: null, target: null });
  $("gallery").replaceChildren();
  $("view").hidden = $("progress").hidden = $("offline").hidden = $("download").hidden = true;
  $("placeholder").hidden = false;
  $("who").hidden = $("sign-out").hidden = $("explorer").hidden = true;
  $("auth").hidden = false;
  $("auth-form").password.value = "";
}

async function start(session) {
  state.api = new Api(session.token);
  state.images = new Images(state.api);
  state.gallery = new Gallery($("gallery"), state.images, (id) => attempt(() => open(id)), GALLERY_SIZE);
  $("who").textContent = session.username;
  $("who").hidden = $("sign-out").hidden = false;
  $("auth").hidden = true;
  $("explorer").hidden = false;
  const { data: jobs } = await state.api.jobs(GALLERY_SIZE);
  state.gallery.set(jobs);
  await listen();  // before any render: none of its changes may be missed
  if (await followAddress()) return;  // a link or a reload names the view
  const newest = jobs.find((j) => j.status === "succeeded") ?? jobs[0];
  if (newest) await open(newest.job_id, "replace");
  else await render(defaultView($("controls").kind.value), "replace");
}

// The event stream of all the user's jobs feeds the gallery and the view; resolves once it is open.
function listen() {
  state.stream?.abort();
  const stream = new AbortController();
  state.stream = stream;
  return new Promise((opened) => {
    const onOpen = (up) => {
      $("offline").hidden = up || stream.signal.aborted;
      opened();
    };
    attempt(async () => {
      for await (const { event, doc } of state.api.events(stream.signal, onOpen)) {
        if (event === "deleted") forget(doc.job_id);
        else if (event === "message") changed(doc);
      }
    }).finally(opened);
  });
}

function changed(job) {
  state.gallery.update(job);
  if (job.job_id === state.target) track(job);
}

function forget(jobId) {
  state.gallery.remove(jobId);
  if (jobId === state.target) track(null);
}

// --- renders -------------------------------------------------------------------------------------

function controls() {
  const form = $("controls");
  return { kind: form.kind.value, colormap: form.colormap.value };
}

// The iterations for a view at `zoom`: the form's when the user set them, else the rule's. Out of
// the field's range is the page's own sentence (the form is novalidate: no browser tooltip).
function iterations(zoom) {
  const input = $("controls").max_iter;
  if (input.value === "" && !input.validity.badInput) return autoIterations(zoom);
  const value = Number(input.value);
  const [min, max] = [Number(input.min), Number(input.max)];
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new ApiError(0, `Iterations must be a whole number from ${min} to ${max}, or empty for auto.`);
  }
  return value;
}

// The form as `params` left it; iterations that follow the rule leave the field empty (auto).
function setControls(params) {
  const form = $("controls");
  if (params.kind) form.kind.value = params.kind;
  if (params.colormap) form.colormap.value = params.colormap;
  const auto = params.max_iter == null || params.max_iter === autoIterations(params.zoom ?? 1);
  form.max_iter.value = auto ? "" : params.max_iter;
}

function zoomStep() {
  return Number($("controls").step.value);
}

function stageSize() {
  return renderSize($("stage").clientWidth, window.devicePixelRatio);
}

// A kind's whole set: no centre, so the service picks that kind's own view.
function defaultView(kind) {
  return { ...controls(), kind, ...stageSize(), zoom: "1" };
}

function viewOf(params) {
  return Object.fromEntries(VIEW_FIELDS.filter((k) => k in params).map((k) => [k, params[k]]));
}

// Renders `view` (precision auto, iterations from the form) and puts it in the address: "push"
// makes a new history entry, "replace" rewrites the current one.
async function render(view, history = "push") {
  const params = { ...view, precision: "auto", max_iter: iterations(view.zoom) };
  const job = await state.api.submit(params);
  remember(job.params, history);  // the service filled in what the view left out (a centre)
  const seen = state.gallery.find(job.job_id);  // the stream may be ahead of this answer
  if (!seen) state.gallery.update(job);
  track(seen ?? job);
}

async function open(jobId, history = "push") {
  const job = state.gallery.find(jobId);
  setControls(job.params);
  remember(job.params, history);
  if (job.status === "succeeded") {
    track(null);
    await show(job);
  } else {
    track(job);
  }
}

// The view waits for `job` (null: for nothing): its progress while it is active, then its image
// or the sentence why there is none.
function track(job) {
  state.target = job && !isFinished(job) ? job.job_id : null;
  showProgress(state.target ? job : null);
  if (state.target) showFacts(job);  // what is coming, not the picture it replaces
  if (!job || state.target) return;
  if (job.status === "succeeded") attempt(() => show(job));
  else if (job.status === "failed") showError(`The render failed: ${job.error ?? "no reason was given"}`);
  else if (!state.cancelled.has(job.job_id)) showError("The render was cancelled.");
}

async function show(job) {
  const view = $("view");
  const video = $("video-view");
  const url = await state.images.url(job);
  video.hidden = !job.animation;
  if (job.animation) {  // a zoom video: played in the stage; the picture keeps the last image
    video.src = url;
    $("placeholder").hidden = true;
    state.gallery.markActive(job.job_id);
    return;
  }
  video.removeAttribute("src");
  view.src = url;
  await view.decode().catch(() => {});
  view.alt = `${KIND_NAMES[job.params.kind]} at ${zoomText(job.params.zoom)}`;
  view.dataset.jobId = job.job_id;
  $("stage").style.aspectRatio = `${job.params.width} / ${job.params.height}`;
  view.hidden = false;
  $("placeholder").hidden = true;
  state.shown = job;
  $("download").hidden = false;
  showFacts(job);
  state.gallery.markActive(job.job_id);
  state.api.resultFile(job.job_id, "result.json").then((used) => {
    if (state.shown === job) showFacts(job, used);
  }, () => {});  // the facts from the request stay
}

function zoomAtClick(event) {
  const job = state.shown;
  if (!job) return;
  const box = event.currentTarget.getBoundingClientRect();
  const { px, py } = pixelAt(job.params, event.clientX - box.left, event.clientY - box.top,
    box.width, box.height);
  const view = { ...viewOf(job.params), ...controls(), kind: job.params.kind };
  return render(zoomedAt(view, px, py, zoomStep()));
}

// --- the view in the address ---------------------------------------------------------------------

function remember(params, history) {
  const url = viewUrl(params);
  if (url === location.search) return;
  if (history === "replace") window.history.replaceState(null, "", url);
  else window.history.pushState(null, "", url);
}

// Shows the view an address names: a job of the gallery that rendered it, else a new render.
async function goTo(view) {
  setControls(view);
  const url = viewUrl({ ...view, max_iter: iterations(view.zoom ?? 1) });
  const done = state.gallery.jobs.find((j) => j.status === "succeeded" && viewUrl(j.params) === url);
  if (done) return open(done.job_id, "replace");
  return render({ ...stageSize(), ...view }, "replace");
}

// Shows the view in the address, if it names one (true), else leaves the page as it is (false).
async function followAddress() {
  let view;
  try {
    view = viewFromUrl(location.search);
  } catch (err) {
    throw new ApiError(0, `The address names no view: ${err.message}.`);
  }
  if (view) await goTo(view);
  return Boolean(view);
}

// Saves the shown PNG (already fetched with the token, so no second download).
async function download() {
  const job = state.shown;
  if (!job) return;
  const link = document.createElement("a");
  link.href = await state.images.url(job);
  link.download = `${job.params.kind}-${job.job_id}.png`;
  link.click();
}

async function cancel() {
  const jobId = state.target;
  if (!jobId) return;
  state.cancelled.add(jobId);
  changed(await state.api.cancel(jobId));
}

// --- what the page shows -------------------------------------------------------------------------

function showProgress(job) {
  $("progress").hidden = !job;
  if (!job) return;
  const fill = $("progress-fill");
  if (fill.dataset.jobId !== job.job_id) {  // a new job's bar starts empty, not sliding back
    fill.dataset.jobId = job.job_id;
    fill.style.transition = "none";
    fill.style.width = "0";
    void fill.offsetWidth;  // apply that before the transition is restored
    fill.style.transition = "";
  }
  fill.style.width = `${((job.progress ?? 0) * 100).toFixed(1)}%`;
  fill.classList.toggle("waiting", job.status !== "running");
  $("progress-text").textContent = describe(job);
  showTasks(job.tasks);
}

// A render array's tasks as one bar: done, running, failed and waiting, in proportion.
function showTasks(tasks) {
  const bar = $("task-bar");
  bar.hidden = !tasks || tasks.total <= 1;
  if (bar.hidden) return;
  bar.replaceChildren(...["succeeded", "running", "failed", "queued"].map((kind) => {
    const part = document.createElement("span");
    part.className = `task-part ${kind}`;
    part.style.flexGrow = tasks[kind];
    part.title = `${tasks[kind]} ${kind}`;
    return part;
  }));
}

// A video zooming from the whole set (zoom 1) to the view shown, at its centre.
async function zoomVideo() {
  const job = state.shown;
  if (!job) return;
  const scale = Math.min(1, 1280 / job.params.width, 720 / job.params.height);  // 720p at most
  const even = (n) => Math.max(2, 2 * Math.round(n * scale / 2));  // video pixels come in 2x2 blocks
  // the zoom as the view has it: a decimal string past float64's range is sent as it is
  const zoomTo = Number(job.params.zoom) > 1.01 ? job.params.zoom : 1.01;
  const animation = { frames: 60, zoom_to: zoomTo, fps: 30, format: "mp4" };
  // the last frame's iterations serve every frame; the video is not a view (no history entry)
  const params = { ...viewOf(job.params), ...controls(), zoom: 1, width: even(job.params.width),
    height: even(job.params.height), precision: "auto", max_iter: iterations(job.params.zoom), animation };
  const video = await state.api.submit(params);
  if (!state.gallery.find(video.job_id)) state.gallery.update(video);
  track(state.gallery.find(video.job_id) ?? video);
}

// The job's facts; `used` is its result.json once read (what the render really used).
function showFacts(job, used = null) {
  const p = job.params;
  const auto = p.max_iter === autoIterations(p.zoom) ? " (auto)" : "";
  const precision = used?.precision ? `${used.precision}${p.precision === "auto" ? " (auto)" : ""}` : p.precision;
  const facts = [
    ["Kind", KIND_NAMES[p.kind]],
    ["Centre", `${coordinate(p.center_x, p)}, ${coordinate(p.center_y, p)}`],
    ["Zoom", zoomText(p.zoom)],
    ["Size", `${p.width} × ${p.height}`],
    ["Iterations", `${p.max_iter}${auto}`],
    ["Precision", precision ?? "auto"],
  ];
  if (job.placement) facts.push(["Ran on", job.placement]);
  $("facts").replaceChildren(...facts.flatMap(([k, v]) => {
    const dt = document.createElement("dt");
    const dd = document.createElement("dd");
    dt.textContent = k;
    dd.textContent = v;
    return [dt, dd];
  }));
}

// --- wiring --------------------------------------------------------------------------------------

function wire() {
  $("auth-form").addEventListener("submit", (event) => {
    event.preventDefault();
    attempt(signIn);
  });
  $("sign-up").addEventListener("click", () => attempt(signUp));
  $("sign-out").addEventListener("click", signOut);
  $("view").addEventListener("click", (event) => attempt(() => zoomAtClick(event)));
  $("cancel").addEventListener("click", () => attempt(cancel));
  $("download").addEventListener("click", () => attempt(download));
  $("zoom-video").addEventListener("click", () => attempt(zoomVideo));
  const form = $("controls");
  const current = () => (state.shown ? viewOf(state.shown.params) : defaultView(form.kind.value));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    attempt(() => render({ ...current(), ...controls() }));
  });
  form.kind.addEventListener("change", () => attempt(() => render(defaultView(form.kind.value))));
  form.colormap.addEventListener("change", () => attempt(() => render({ ...current(), ...controls() })));
  $("zoom-out").addEventListener("click", () => {
    const view = current();
    attempt(() => render({ ...view, ...controls(), zoom: scaledZoom(view.zoom, 1 / zoomStep()) }));
  });
  window.addEventListener("popstate", () => {
    if (state.api.token) attempt(followAddress);
  });
  $("reset").addEventListener("click", () => attempt(() => render(defaultView(form.kind.value))));
}

wire();
const session = savedSession();
if (session) attempt(() => start(session));
else $("auth").hidden = false;
