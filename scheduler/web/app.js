// The explorer: sign in, show the current render large, click it to zoom in there, follow jobs
// live, browse the gallery. The page talks to the same HTTP API as fractalctl.
import { Api, ApiError, isFinished } from "./api.js";
import { pixelAt, renderSize, zoomedAt } from "./view.js";

const $ = (id) => document.getElementById(id);
const SESSION_KEY = "fractal-explorer.session";
const GALLERY_SIZE = 24;
// the fields one view hands to the next render; the rest keep the server's defaults
const VIEW_FIELDS = ["kind", "width", "height", "center_x", "center_y", "zoom", "max_iter",
  "julia_re", "julia_im", "colormap"];
const KIND_NAMES = { mandelbrot: "Mandelbrot", julia: "Julia", burning_ship: "Burning ship" };

const state = {
  api: new Api(),
  shown: null,      // the job whose image is in the view (clicks zoom into it)
  followed: null,   // AbortController of the job being followed
  thumbs: new Map(),// job_id -> object URL of its image
};

// --- errors as sentences ------------------------------------------------------------------------

function showError(sentence) {
  $("error").textContent = sentence;
  $("error").hidden = false;
}

function clearError() {
  $("error").hidden = true;
}

// Runs an action; an API refusal becomes a sentence on the page, an ended session the sign-in form.
async function attempt(action) {
  clearError();
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
  state.followed?.abort();
  state.api = new Api();
  state.shown = null;
  for (const url of state.thumbs.values()) URL.revokeObjectURL(url);
  state.thumbs.clear();
  $("gallery").replaceChildren();
  $("view").hidden = true;
  $("placeholder").hidden = false;
  $("who").hidden = $("sign-out").hidden = true;
  $("explorer").hidden = true;
  $("auth").hidden = false;
  $("auth-form").password.value = "";
}

async function start(session) {
  state.api = new Api(session.token);
  $("who").textContent = session.username;
  $("who").hidden = $("sign-out").hidden = false;
  $("auth").hidden = true;
  $("explorer").hidden = false;
  const jobs = await loadGallery();
  if (jobs.length) await open(jobs.find((j) => j.status === "succeeded") ?? jobs[0]);
  else await render(defaultView($("controls").kind.value));
}

// --- renders -------------------------------------------------------------------------------------

function controls() {
  const form = $("controls");
  return { kind: form.kind.value, colormap: form.colormap.value, max_iter: Number(form.max_iter.value) };
}

function setControls(params) {
  const form = $("controls");
  form.kind.value = params.kind;
  form.colormap.value = params.colormap;
  form.max_iter.value = params.max_iter;
}

// A kind's whole set: no centre, so the service picks that kind's own view.
function defaultView(kind) {
  const { width, height } = renderSize($("stage").clientWidth, window.devicePixelRatio);
  return { ...controls(), kind, width, height, zoom: 1 };
}

function viewOf(params) {
  return Object.fromEntries(VIEW_FIELDS.filter((k) => k in params).map((k) => [k, params[k]]));
}

async function render(params) {
  const job = await state.api.submit(params);
  state.thumbs.delete(job.job_id);
  await loadGallery();
  await follow(job);
}

async function open(job) {
  setControls(job.params);
  if (job.status === "succeeded") {
    state.followed?.abort();
    await show(job);
  } else {
    await follow(job);
  }
}

async function follow(job) {
  state.followed?.abort();
  const followed = new AbortController();
  state.followed = followed;
  showProgress(job);
  for await (const doc of state.api.follow(job, followed.signal)) {
    if (followed.signal.aborted) return;
    job = doc;
    showProgress(job);
  }
  if (followed.signal.aborted) return;
  showProgress(null);
  if (job.status === "succeeded") await show(job);
  else if (job.status === "failed") showError(`The render failed: ${job.error ?? "no reason was given"}`);
  else showError("The render was cancelled.");
  await loadGallery();
}

async function imageUrl(job) {
  if (!state.thumbs.has(job.job_id)) {
    state.thumbs.set(job.job_id, URL.createObjectURL(await state.api.image(job.job_id)));
  }
  return state.thumbs.get(job.job_id);
}

async function show(job) {
  const view = $("view");
  const url = await imageUrl(job);
  view.src = url;
  await view.decode().catch(() => {});
  view.alt = `${KIND_NAMES[job.params.kind]} at ${zoomText(job.params.zoom)}`;
  view.dataset.jobId = job.job_id;
  $("stage").style.aspectRatio = `${job.params.width} / ${job.params.height}`;
  view.hidden = false;
  $("placeholder").hidden = true;
  state.shown = job;
  showFacts(job);
  markActive();
}

function zoomAtClick(event) {
  const job = state.shown;
  if (!job) return;
  const box = event.currentTarget.getBoundingClientRect();
  const { px, py } = pixelAt(job.params, event.clientX - box.left, event.clientY - box.top,
    box.width, box.height);
  return render(zoomedAt({ ...viewOf(job.params), ...controls(), kind: job.params.kind }, px, py));
}

// --- what the page shows -------------------------------------------------------------------------

function zoomText(zoom) {
  return zoom >= 1e4 ? `${zoom.toExponential(2)}×` : `${Number(zoom.toPrecision(6))}×`;
}

// As many digits as tell one pixel from the next at this zoom, no more.
function coordinate(value, params) {
  const digits = Math.min(17, 3 + Math.ceil(Math.log10(params.zoom * params.width)));
  return String(Number(value.toPrecision(digits)));
}

function describe(job) {
  const parts = [];
  if (job.status === "running" && job.progress != null) parts.push(`${Math.round(job.progress * 100)}%`);
  if (job.status === "queued" && job.queue_position) parts.push(`#${job.queue_position} in the queue`);
  if (job.status === "queued" && job.estimated_start_at) {
    parts.push(`starts about ${new Date(job.estimated_start_at).toLocaleTimeString()}`);
  }
  if ((job.status === "queued" || job.status === "pending") && job.message) parts.push(job.message);
  return [job.status, ...parts].join(" · ");
}

function showProgress(job) {
  $("progress").hidden = !job;
  if (!job) return;
  const done = job.status === "succeeded" ? 1 : job.progress ?? 0;
  $("progress-fill").style.width = `${(done * 100).toFixed(1)}%`;
  $("progress-fill").classList.toggle("waiting", job.status !== "running");
  $("progress-text").textContent = describe(job);
}

function showFacts(job) {
  const p = job.params;
  const facts = [
    ["Kind", KIND_NAMES[p.kind]],
    ["Centre", `${coordinate(p.center_x, p)}, ${coordinate(p.center_y, p)}`],
    ["Zoom", zoomText(p.zoom)],
    ["Size", `${p.width} × ${p.height}`],
    ["Iterations", p.max_iter],
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

async function loadGallery() {
  const page = await state.api.jobs(GALLERY_SIZE);
  $("gallery").replaceChildren(...page.data.map(galleryItem));
  markActive();
  return page.data;
}

function galleryItem(job) {
  const li = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.className = "thumb";
  button.dataset.jobId = job.job_id;
  button.title = `${KIND_NAMES[job.params.kind]} at ${zoomText(job.params.zoom)}: ${job.status}`;
  const picture = document.createElement(job.status === "succeeded" ? "img" : "div");
  picture.className = "picture";
  if (job.status === "succeeded") {
    picture.alt = button.title;
    imageUrl(job).then((url) => { picture.src = url; }, () => picture.classList.add("missing"));
  } else {
    picture.textContent = job.status;
    picture.classList.add(job.status);
  }
  const caption = document.createElement("span");
  caption.className = "caption";
  caption.textContent = `${KIND_NAMES[job.params.kind]} · ${zoomText(job.params.zoom)}`;
  button.append(picture, caption);
  button.addEventListener("click", () => attempt(() => open(job)));
  li.append(button);
  return li;
}

function markActive() {
  for (const button of $("gallery").querySelectorAll(".thumb")) {
    button.classList.toggle("active", button.dataset.jobId === state.shown?.job_id);
  }
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
    attempt(() => render({ ...view, ...controls(), zoom: view.zoom / 2 }));
  });
  $("reset").addEventListener("click", () => attempt(() => render(defaultView(form.kind.value))));
}

wire();
const session = savedSession();
if (session) attempt(() => start(session));
else $("auth").hidden = false;
