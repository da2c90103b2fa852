// The view's geometry, as docs/design.md fixes it: with s = 3 / zoom / width, pixel column px and
// row py (row 0 at the top) sample x = cx + (px + 0.5 - width/2) s, y = cy - (py + 0.5 - height/2) s.
// Centres and zoom are decimal strings computed exactly (decimal.js), so a click lands on the
// pixel clicked at any depth; numbers from older jobs are read as the decimals they print as.
import { Decimal } from "./decimal.js";

// Digits kept below the pixel spacing when a new centre is written: the centre lies within
// 10^-GUARD_DIGITS of a pixel of the sample point clicked, far below what any renderer resolves.
export const GUARD_DIGITS = 10;

// The sample point of pixel (px, py), as floats: for display, exact only while floats are.
export function pixelPoint(params, px, py) {
  const s = 3.0 / params.zoom / params.width;
  return {
    x: params.center_x + (px + 0.5 - params.width / 2) * s,
    y: params.center_y - (py + 0.5 - params.height / 2) * s,
  };
}

// The power of ten that new centres of this view are written to: GUARD_DIGITS below the pixel
// spacing 3 / zoom / width (> 10^-(digits of zoom's integer part + digits of width)).
export function centreExponent(params) {
  const zoom = Decimal.of(params.zoom);
  return -(Math.max(zoom.magnitude() + 1, 0) + String(params.width).length + GUARD_DIGITS);
}

// The sample point of pixel (px, py) as decimal strings: the mapping's offset (2p + 1 - n) * 3 /
// (2 * zoom * width), rounded half to even to 10^centreExponent, added exactly to the centre.
export function pixelCentre(params, px, py) {
  const e = centreExponent(params);
  const twice = Decimal.of(params.zoom).times(2 * params.width);
  const offset = (p, n) => new Decimal(BigInt(3 * (2 * p + 1 - n)), 0).divide(twice, e);
  return {
    x: Decimal.of(params.center_x).plus(offset(px, params.width)).toString(),
    y: Decimal.of(params.center_y).minus(offset(py, params.height)).toString(),
  };
}

// zoom × factor, exactly (factors such as 2 or 0.5 keep a power-of-two zoom's digits finite).
export function scaledZoom(zoom, factor) {
  return Decimal.of(zoom).times(factor).toString();
}

// The image pixel under a click at (offsetX, offsetY) CSS pixels of an element shown
// displayWidth × displayHeight CSS pixels (the image may be scaled to fit).
export function pixelAt(params, offsetX, offsetY, displayWidth, displayHeight) {
  const clamp = (v, hi) => Math.min(Math.max(v, 0), hi - 1);
  return {
    px: clamp(Math.floor((offsetX * params.width) / displayWidth), params.width),
    py: clamp(Math.floor((offsetY * params.height) / displayHeight), params.height),
  };
}

// The request that zooms in `factor`× centred on pixel (px, py) of the render `params`.
export function zoomedAt(params, px, py, factor = 2) {
  const { x, y } = pixelCentre(params, px, py);
  return { ...params, center_x: x, center_y: y, zoom: scaledZoom(params.zoom, factor) };
}

// Iterations when the user sets none: 500 at zoom 1 (the service's default) and 250 more per
// factor of ten of zoom, capped at `most` (the service's MAX_ITER). Near the set escape counts
// grow with the decades zoomed, so a fixed count would paint deep views as interior (README).
export function autoIterations(zoom, most = 100_000) {
  const decades = Math.max(0, Decimal.of(zoom).magnitude());
  return Math.min(most, 500 + 250 * decades);
}

// The render size for a stage `cssWidth` CSS pixels wide: 4:3, sharp on dense screens, bounded.
export function renderSize(cssWidth, pixelRatio = 1, maxWidth = 1600) {
  const width = Math.max(64, Math.min(maxWidth, Math.round(cssWidth * Math.min(pixelRatio, 2))));
  return { width, height: Math.round((width * 3) / 4) };
}

// --- the view in the page's address: ?kind=…&x=…&y=…&zoom=…&colours=…[&iter=…] -------------------

// The address of a view: its centre and zoom as exact decimals; iterations only where they
// differ from autoIterations (a link then keeps following the rule).
export function viewUrl(view) {
  const query = new URLSearchParams({ kind: view.kind });
  if (view.center_x != null) query.set("x", Decimal.of(view.center_x).toString());
  if (view.center_y != null) query.set("y", Decimal.of(view.center_y).toString());
  query.set("zoom", Decimal.of(view.zoom ?? 1).toString());
  if (view.colormap) query.set("colours", view.colormap);
  if (view.max_iter != null && view.max_iter !== autoIterations(view.zoom ?? 1)) query.set("iter", view.max_iter);
  return `?${query}`;
}

// The view an address names (null when it names none); a TypeError names a malformed number.
export function viewFromUrl(search) {
  const query = new URLSearchParams(search);
  if (!query.has("zoom") && !query.has("x") && !query.has("y")) return null;
  const view = { kind: query.get("kind") || "mandelbrot", zoom: Decimal.of(query.get("zoom") ?? 1).toString() };
  for (const [field, key] of [["center_x", "x"], ["center_y", "y"]]) {
    if (query.has(key)) view[field] = Decimal.of(query.get(key)).toString();
  }
  if (query.has("colours")) view.colormap = query.get("colours");
  if (query.has("iter")) {
    const iter = Number(query.get("iter"));
    if (!Number.isInteger(iter) || iter < 1) throw new TypeError(`iter=${query.get("iter")} is not a whole number`);
    view.max_iter = iter;
  }
  return view;
}
