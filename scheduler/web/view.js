// The view's geometry, as docs/design.md fixes it: with s = 3 / zoom / width, pixel column px and
// row py (row 0 at the top) sample x = cx + (px + 0.5 - width/2) s, y = cy - (py + 0.5 - height/2) s.

export function pixelPoint(params, px, py) {
  const s = 3.0 / params.zoom / params.width;
  return {
    x: params.center_x + (px + 0.5 - params.width / 2) * s,
    y: params.center_y - (py + 0.5 - params.height / 2) * s,
  };
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
  const { x, y } = pixelPoint(params, px, py);
  return { ...params, center_x: x, center_y: y, zoom: params.zoom * factor };
}

// The render size for a stage `cssWidth` CSS pixels wide: 4:3, sharp on dense screens, bounded.
export function renderSize(cssWidth, pixelRatio = 1, maxWidth = 1600) {
  const width = Math.max(64, Math.min(maxWidth, Math.round(cssWidth * Math.min(pixelRatio, 2))));
  return { width, height: Math.round((width * 3) / 4) };
}
