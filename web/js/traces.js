// Oculography-style trace plotting on <canvas>, a ring buffer for samples,
// and a blink detector. No DOM lookups here: the doctor page wires it up.

/** Fixed-capacity buffer of samples in arrival order (oldest dropped first). */
export class RingBuffer {
  constructor(capacity) {
    this.items = new Array(capacity);
    this.start = 0;
    this.length = 0;
  }

  push(item) {
    const cap = this.items.length;
    if (this.length < cap) {
      this.items[(this.start + this.length) % cap] = item;
      this.length += 1;
    } else {
      this.items[this.start] = item;
      this.start = (this.start + 1) % cap;
    }
  }

  at(i) {
    return this.items[(this.start + i) % this.items.length];
  }

  last() {
    return this.length ? this.at(this.length - 1) : undefined;
  }

  clear() {
    this.start = 0;
    this.length = 0;
  }

  /** Samples with t >= tMin (samples are ordered by t, so scan back from the end). */
  since(tMin) {
    let i = this.length;
    while (i > 0 && this.at(i - 1).t >= tMin) i -= 1;
    const out = [];
    for (; i < this.length; i += 1) out.push(this.at(i));
    return out;
  }

  toArray() {
    return this.since(-Infinity);
  }

  *[Symbol.iterator]() {
    for (let i = 0; i < this.length; i += 1) yield this.at(i);
  }
}

/**
 * Blink detection from the lid aperture with hysteresis, the same rule as the
 * proxy's proxy/tracking/blinks.py: the eye counts as closed below
 * max(closeBelow, closeRatio x level) and as open again only above
 * max(openAbove, openRatio x level), where level is the 90th percentile of the
 * aperture over the last `windowS` seconds. A wide-open eye blinking at 30 fps
 * is rarely sampled fully shut, so "closed" is also relative to the eye's own
 * open level; noise around one threshold cannot produce extra blinks. A blink
 * is counted when the eye re-opens.
 */
export class BlinkDetector {
  constructor({ closeBelow = 0.12, openAbove = 0.18, closeRatio = 0.55, openRatio = 0.75, windowS = 2 } = {}) {
    this.closeBelow = closeBelow;
    this.openAbove = openAbove;
    this.closeRatio = closeRatio;
    this.openRatio = openRatio;
    this.windowS = windowS;
    this.reset();
  }

  reset() {
    this.closed = false;
    this.count = 0;
    this.times = []; // t of each counted blink (re-opening time)
    this.history = []; // [t, aperture] of the last windowS seconds
    this.firstT = null;
    this.lastT = null;
  }

  /** The eye's recent open level: 90th percentile of the window (null with too few samples). */
  level() {
    if (this.history.length < 6) return null;
    const values = this.history.map((h) => h[1]).sort((a, b) => a - b);
    const rank = 0.9 * (values.length - 1);
    const lo = Math.floor(rank);
    const hi = Math.min(lo + 1, values.length - 1);
    return values[lo] + (values[hi] - values[lo]) * (rank - lo);
  }

  /** Feed one sample; returns true when a blink has just completed. */
  update(t, aperture) {
    if (!Number.isFinite(t)) return false;
    if (this.firstT === null || t < this.lastT) {
      this.firstT = t; // (re)start the clock on a time jump
      this.history = [];
    }
    this.lastT = t;
    if (!Number.isFinite(aperture)) return false; // no face: keep the current state
    while (this.history.length && this.history[0][0] < t - this.windowS) this.history.shift();
    const level = this.level();
    this.history.push([t, aperture]);
    const closeBelow = level === null ? this.closeBelow : Math.max(this.closeBelow, this.closeRatio * level);
    const openAbove = level === null ? this.openAbove : Math.max(this.openAbove, this.openRatio * level);
    if (!this.closed && aperture < closeBelow) {
      this.closed = true;
    } else if (this.closed && aperture > openAbove) {
      this.closed = false;
      this.count += 1;
      this.times.push(t);
      if (this.times.length > 1000) this.times.shift();
      return true;
    }
    return false;
  }

  /**
   * Blinks per minute over the last `windowS` seconds (or over the time observed
   * so far, if shorter). Null until at least `minS` seconds have been observed.
   */
  ratePerMinute(windowS = 60, minS = 10) {
    if (this.firstT === null) return null;
    const observed = Math.min(windowS, this.lastT - this.firstT);
    if (observed < minS) return null;
    const from = this.lastT - observed;
    const n = this.times.filter((bt) => bt >= from).length;
    return (n * 60) / observed;
  }
}

/** Right margin of every plot, in CSS pixels: room for a reference line's short label ("closed", "open"). */
const RIGHT_MARGIN = 46;

/** Resize the canvas backing store to its CSS size times devicePixelRatio. */
function fitCanvas(canvas) {
  const dpr = window.devicePixelRatio || 1;
  const w = Math.max(1, Math.round(canvas.clientWidth * dpr));
  const h = Math.max(1, Math.round(canvas.clientHeight * dpr));
  if (canvas.width !== w || canvas.height !== h) {
    canvas.width = w;
    canvas.height = h;
  }
  return dpr;
}

/** Widen [min, max] in steps of `step` so that all finite values fit. */
function fitRange(values, [min, max], step) {
  for (const v of values) {
    if (!Number.isFinite(v)) continue;
    if (v > max) max = Math.ceil(v / step) * step;
    if (v < min) min = Math.floor(v / step) * step;
  }
  return [min, max];
}

/**
 * Draw time traces of the last `span` seconds ending at `tEnd`.
 *
 * series: [{color, dash, value: (sample) => number|null}]; null/NaN breaks the line.
 * y: {range: [min, max], step (grid spacing), unit, decimals, expand (widen to fit data)}
 * marks: [{value, label}] horizontal reference lines (e.g. blink thresholds), labelled in the right margin,
 *   clear of the traces.
 * events: [{t, label}] vertical lines at moments in time (the doctor's marks).
 */
export function drawTraces(canvas, samples, { tEnd, span = 10, series, y, marks = [], events = [], style }) {
  const dpr = fitCanvas(canvas);
  const ctx = canvas.getContext('2d');
  const W = canvas.width / dpr;
  const H = canvas.height / dpr;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, W, H);

  const s = { bg: '#fff', grid: '#e3e6ea', zero: '#9aa3ad', text: '#4a5561', font: '11px system-ui, sans-serif', ...style };
  ctx.font = s.font;
  const labelled = marks.filter((mark) => mark.label);
  const labelWidth = Math.max(0, ...labelled.map((mark) => ctx.measureText(mark.label).width + 8));
  // the same right margin on every plot (room for a short label), so that their time axes line up
  const pad = { left: 44, right: Math.max(RIGHT_MARGIN, Math.ceil(labelWidth)), top: 8, bottom: 22 };
  const pw = W - pad.left - pad.right;
  const ph = H - pad.top - pad.bottom;
  if (pw <= 0 || ph <= 0) return;

  const tStart = tEnd - span;
  let [yMin, yMax] = y.range;
  if (y.expand) {
    const values = [];
    for (const sample of samples) for (const ser of series) values.push(ser.value(sample));
    [yMin, yMax] = fitRange(values, [yMin, yMax], y.step);
  }
  const px = (t) => pad.left + ((t - tStart) / span) * pw;
  const py = (v) => pad.top + (1 - (v - yMin) / (yMax - yMin)) * ph;

  ctx.fillStyle = s.bg;
  ctx.fillRect(pad.left, pad.top, pw, ph);
  ctx.font = s.font;
  ctx.lineWidth = 1;

  // Horizontal grid + value axis labels.
  ctx.textAlign = 'right';
  ctx.textBaseline = 'middle';
  const first = Math.ceil(yMin / y.step - 1e-9) * y.step;
  for (let v = first; v <= yMax + 1e-9; v += y.step) {
    const yy = Math.round(py(v)) + 0.5;
    ctx.strokeStyle = Math.abs(v) < 1e-9 ? s.zero : s.grid;
    ctx.beginPath();
    ctx.moveTo(pad.left, yy);
    ctx.lineTo(pad.left + pw, yy);
    ctx.stroke();
    ctx.fillStyle = s.text;
    ctx.fillText(`${v.toFixed(y.decimals ?? 0)}${y.unit ?? ''}`, pad.left - 4, yy);
  }

  // Vertical grid every 2 s, labelled relative to now (−10 s … 0).
  ctx.textAlign = 'center';
  ctx.textBaseline = 'top';
  for (let k = 0; k <= span; k += 2) {
    const xx = Math.round(px(tStart + k)) + 0.5;
    ctx.strokeStyle = s.grid;
    ctx.beginPath();
    ctx.moveTo(xx, pad.top);
    ctx.lineTo(xx, pad.top + ph);
    ctx.stroke();
    ctx.fillStyle = s.text;
    ctx.fillText(k === span ? 'now' : `${k - span} s`, xx, pad.top + ph + 5);
  }

  // Reference lines, each labelled in the right margin beside its line (labels too close are moved apart).
  ctx.setLineDash([3, 3]);
  const labels = [];
  for (const mark of marks) {
    const yy = Math.round(py(mark.value)) + 0.5;
    ctx.strokeStyle = s.zero;
    ctx.beginPath();
    ctx.moveTo(pad.left, yy);
    ctx.lineTo(pad.left + pw, yy);
    ctx.stroke();
    if (mark.label) labels.push({ y: yy, text: mark.label });
  }
  ctx.textAlign = 'left';
  ctx.textBaseline = 'middle';
  ctx.fillStyle = s.text;
  labels.sort((a, b) => b.y - a.y); // bottom first: the ones above move up
  let below = Infinity;
  for (const label of labels) {
    const yy = Math.min(label.y, below - 12);
    ctx.fillText(label.text, pad.left + pw + 4, yy);
    below = yy;
  }

  // Moments marked by the doctor.
  ctx.textBaseline = 'top';
  for (const event of events) {
    if (event.t < tStart || event.t > tEnd) continue;
    const xx = Math.round(px(event.t)) + 0.5;
    ctx.strokeStyle = '#6a1b9a';
    ctx.beginPath();
    ctx.moveTo(xx, pad.top);
    ctx.lineTo(xx, pad.top + ph);
    ctx.stroke();
    ctx.fillStyle = '#6a1b9a';
    ctx.fillText(event.label, xx + 3, pad.top + 2);
  }

  // Traces, clipped to the plot area.
  ctx.save();
  ctx.beginPath();
  ctx.rect(pad.left, pad.top, pw, ph);
  ctx.clip();
  ctx.lineWidth = 1.75;
  ctx.lineJoin = 'round';
  for (const ser of series) {
    ctx.strokeStyle = ser.color;
    ctx.setLineDash(ser.dash || []);
    ctx.beginPath();
    let pen = false;
    for (const sample of samples) {
      const v = ser.value(sample);
      if (!Number.isFinite(v)) {
        pen = false; // gap: no face in this frame
        continue;
      }
      const xx = px(sample.t);
      const yy = py(v);
      if (pen) ctx.lineTo(xx, yy);
      else ctx.moveTo(xx, yy);
      pen = true;
    }
    ctx.stroke();
  }
  ctx.restore();
  ctx.setLineDash([]);
}
