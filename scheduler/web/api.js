// The HTTP API, as the CLI uses it: JSON in and out, a bearer token, errors as the server's sentence.

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

const RETRY_MS = 500;
const RETRY_MAX_MS = 10_000;
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

  jobs(limit) {
    return this.json("GET", `/jobs?limit=${limit}`);
  }

  async image(id, signal) {
    return (await this.request("GET", `/jobs/${id}/result`, { signal })).blob();
  }

  // Another stored file of a job, as JSON (result.json: what the render used).
  resultFile(id, name) {
    return this.json("GET", `/jobs/${id}/result?file=${encodeURIComponent(name)}`);
  }

  cancel(id) {
    return this.json("POST", `/jobs/${id}/cancel`);
  }

  // Every change of the caller's jobs, from `GET /events`, for as long as `signal` allows:
  // yields { event, doc } ("message" with a job document, "deleted" with its job_id). The stream
  // is read with fetch (EventSource cannot send a bearer token); a lost one is opened again with
  // Last-Event-ID, so nothing is missed or repeated. `onOpen(true | false)` tells whether the
  // stream is up; a refusal (e.g. an ended session) is thrown.
  async *events(signal, onOpen = () => {}) {
    let lastId = null;
    let pause = RETRY_MS;
    while (!signal.aborted) {
      const headers = { Accept: "text/event-stream" };
      if (lastId !== null) headers["Last-Event-ID"] = lastId;
      try {
        const response = await this.request("GET", "/events", { signal, headers });
        onOpen(true);
        pause = RETRY_MS;
        for await (const event of parseEvents(response.body, signal)) {
          lastId = event.id ?? lastId;
          yield { event: event.event, doc: JSON.parse(event.data) };
        }
      } catch (err) {
        if (err instanceof ApiError && err.status === 422 && lastId !== null) {
          lastId = null;  // too far behind to resume: start again from the current state
          continue;
        }
        if (err.name === "AbortError" || (err instanceof ApiError && err.status !== 0)) throw err;
      }
      if (signal.aborted) return;
      onOpen(false);  // the connection was lost: wait a little, then resume
      await new Promise((resolve) => setTimeout(resolve, pause));
      pause = Math.min(pause * 2, RETRY_MAX_MS);
    }
  }
}

// Lines ended by CR, LF or CRLF (the WHATWG event-stream rule), from text that arrives in chunks
// split anywhere: a chunk may end between CR and LF, and that LF must not end a second line.
export function lineSplitter() {
  let rest = "";
  let afterCR = false;  // the previous chunk ended with CR: an LF that starts this one belongs to it
  return (chunk) => {
    if (afterCR && chunk.startsWith("\n")) {
      chunk = chunk.slice(1);
      afterCR = false;
    }
    if (!chunk) return [];
    afterCR = chunk.endsWith("\r");
    const lines = (rest + chunk).split(/\r\n|\r|\n/);
    rest = lines.pop();  // a partial line waits for the rest
    return lines;
  };
}

// Server-Sent Events from a byte stream, per the WHATWG "event stream interpretation" rules:
// comments skipped, multi-line data joined, the last id carried on.
export async function* parseEvents(body, signal) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  const onAbort = () => reader.cancel().catch(() => {});
  signal?.addEventListener("abort", onAbort, { once: true });
  const split = lineSplitter();
  let data = [];
  let type = "";
  let id = null;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      for (const line of split(value)) {
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
