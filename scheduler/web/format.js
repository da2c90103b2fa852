// How the page writes a job's numbers and state. Coordinates and zoom may be decimal strings
// past any float's range or precision, so they are written from exact decimals.
import { Decimal } from "./decimal.js";
import { centreExponent, GUARD_DIGITS } from "./view.js";

export const KIND_NAMES = { mandelbrot: "Mandelbrot", julia: "Julia", burning_ship: "Burning ship" };

// `1×`, `64×`, `6.55e+4×`, `1.00e+100×` (three digits from 10^4 on, as toExponential(2) writes).
export function zoomText(zoom) {
  const z = Decimal.of(zoom);
  if (z.magnitude() < 4) return `${Number(z.toNumber().toPrecision(6))}×`;
  const rounded = z.round(z.magnitude() - 2);  // may carry into the next power of ten
  const power = rounded.magnitude();
  const mantissa = rounded.times(new Decimal(1n, -power)).toNumber();
  return `${mantissa.toFixed(2)}e+${power}×`;
}

// As many digits as tell one pixel from the next at this zoom (and one more), no more.
export function coordinate(value, params) {
  return Decimal.of(value).round(centreExponent(params) + GUARD_DIGITS - 1).toString();
}

export function title(params) {
  return `${KIND_NAMES[params.kind] ?? params.kind} · ${zoomText(params.zoom)}`;
}

// `running · 40%`, `queued · #2 in the queue · starts about 10:42:05`, `pending · <why it waits>`;
// the scheduling fields are shown when the service sends them.
export function describe(job) {
  const parts = [job.status];
  if (job.status === "running" && job.progress != null) parts.push(`${Math.round(job.progress * 100)}%`);
  const tasks = job.tasks ?? { total: 1 };
  if (tasks.total > 1) parts.push(`${tasks.succeeded} of ${tasks.total} ${job.animation ? "frames" : "bands"}`);
  if (job.status === "queued" && job.queue_position) parts.push(`#${job.queue_position} in the queue`);
  if (job.status === "queued" && job.estimated_start_at) {
    parts.push(`starts about ${new Date(job.estimated_start_at).toLocaleTimeString()}`);
  }
  if ((job.status === "queued" || job.status === "pending") && job.message) parts.push(job.message);
  return parts.join(" · ");
}
