// The HTTP API, as the CLI uses it: JSON in and out, a bearer token, errors as the server's sentence.

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

const FINISHED = new Set(["succeeded", "failed", "cancelled"]);
export const isFinished = (job) => FINISHED.has(job.status);

async function detailOf(response) {
  try {
    const body = await response.json();
    if (typeof body.detail === "string" && body.detail) return body.detail;
  } catch { /* not JSON: fall through */ }
  return `The service answered ${response.status} ${response.statusText}.`.replace(" .", ".");
}

export class Api {
  constructor(token = null) {
    this.token = token;
  }

  async request(method, path, { json, signal, headers = {} } = {}) {
    // bearer tokens, no cookies: "omit" also keeps a 401's Basic challenge (sign-in answers
    // one) from opening the browser's own password dialog (Fetch standard, HTTP-network-or-cache fetch)
    const init = { method, signal, credentials: "omit", headers: { ...headers } };
    if (this.token) init.headers.Authorization = `Bearer ${this.token}`;
    if (json !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(json);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (err) {
      if (err.name === "AbortError") throw err;
      throw new ApiError(0, "The service cannot be reached; check that it is running.");
    }
    if (!response.ok) throw new ApiError(response.status, await detailOf(response));
    return response;
  }

  async json(method, path, options) {
    return (await this.request(method, path, options)).json();
  }

  signUp(username, password) {
    return this.json("POST", "/auth/sign-up", { json: { username, password } });
  }

  signIn(username, password) {
    return this.json("POST", "/auth/sign-in", { json: { username, password } });
  }

  submit(params) {
    return this.json("POST", "/jobs", { json: params });
  }

  job(id, wait = 0, signal) {
    return this.json("GET", `/jobs/${id}${wait ? `?wait=${wait}` : ""}`, { signal });
  }

  jobs(limit) {
    return this.json("GET", `/jobs?limit=${limit}`);
  }

  async image(id, signal) {
    return (await this.request("GET", `/jobs/${id}/result`, { signal })).blob();
  }

  // Yields each job document the server sends until the job has finished. The stream is read
  // with fetch (EventSource cannot send a bearer token); a lost stream resumes with
  // Last-Event-ID, and a service without the stream is long-polled instead.
  async *follow(job, signal) {
    let lastId = null;
    while (!isFinished(job)) {
      const headers = { Accept: "text/event-stream" };
      if (lastId) headers["Last-Event-ID"] = lastId;
      let response;
      try {
        response = await this.request("GET", `/jobs/${job.job_id}/events`, { signal, headers });
      } catch (err) {
        if (!(err instanceof ApiError && (err.status === 404 || err.status === 405))) throw err;
        yield* this.poll(job, signal);
        return;
      }
      for await (const event of parseEvents(response.body, signal)) {
        if (event.id !== null) lastId = event.id;
        job = JSON.parse(event.data);
        yield job;
        if (isFinished(job)) return;
      }
      job = await this.job(job.job_id, 0, signal);  // the stream ended early: where are we?
      yield job;
    }
  }

  async *poll(job, signal) {
    while (!isFinished(job)) {
      job = await this.job(job.job_id, 1, signal);
      yield job;
    }
  }
}

// Server-Sent Events from a byte stream, per the WHATWG "event stream interpretation" rules:
// comments skipped, multi-line data joined, the last id carried on.
export async function* parseEvents(body, signal) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  const onAbort = () => reader.cancel().catch(() => {});
  signal?.addEventListener("abort", onAbort, { once: true });
  let buffer = "";
  let data = [];
  let type = "";
  let id = null;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      const lines = buffer.split(/\r\n|\r|\n/);
      buffer = lines.pop();  // a partial line waits for the rest
      for (const line of lines) {
        if (line === "") {
          if (data.length) yield { data: data.join("\n"), event: type || "message", id };
          data = [];
          type = "";
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const name = colon < 0 ? line : line.slice(0, colon);
        let field = colon < 0 ? "" : line.slice(colon + 1);
        if (field.startsWith(" ")) field = field.slice(1);
        if (name === "data") data.push(field);
        else if (name === "event") type = field;
        else if (name === "id" && !field.includes("\0")) id = field;
      }
    }
  } finally {
    signal?.removeEventListener("abort", onAbort);
    reader.releaseLock?.();
  }
}
