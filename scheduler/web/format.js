// How the page writes a job's numbers and state.

export const KIND_NAMES = { mandelbrot: "Mandelbrot", julia: "Julia", burning_ship: "Burning ship" };

export function zoomText(zoom) {
  return zoom >= 1e4 ? `${zoom.toExponential(2)}×` : `${Number(zoom.toPrecision(6))}×`;
}

// As many digits as tell one pixel from the next at this zoom, no more.
export function coordinate(value, params) {
  const digits = Math.min(17, 3 + Math.ceil(Math.log10(params.zoom * params.width)));
  return String(Number(value.toPrecision(digits)));
}

export function title(params) {
  return `${KIND_NAMES[params.kind] ?? params.kind} · ${zoomText(params.zoom)}`;
}

// `running · 40%`, `queued · #2 in the queue · starts about 10:42:05`, `pending · <why it waits>`;
// the scheduling fields are shown when the service sends them.
export function describe(job) {
  const parts = [job.status];
  if (job.status === "running" && job.progress != null) parts.push(`${Math.round(job.progress * 100)}%`);
  if (job.status === "queued" && job.queue_position) parts.push(`#${job.queue_position} in the queue`);
  if (job.status === "queued" && job.estimated_start_at) {
    parts.push(`starts about ${new Date(job.estimated_start_at).toLocaleTimeString()}`);
  }
  if ((job.status === "queued" || job.status === "pending") && job.message) parts.push(job.message);
  return parts.join(" · ");
}
