// Doctor page, eye examination: the guided tests' buttons, the target beside each eye's gaze in the traces,
// the results after a test, the clinical readouts once a second, the eye close-up, marks, and export.
//
// Commands go to the proxy on the "mask" data channel as {"exam": {"test": ..., options}}; the proxy checks
// them (proxy/exam/commands.py), forwards the test to the patient's page and answers with exam_started,
// exam_target (the dot's position with every frame), exam_result and, once a second, exam_live. Export is
// assembled here from what this page received: nothing new is stored on the server.

const $ = (id) => document.getElementById(id);

const KEEP_FRAMES = 18000; // parameters kept for export: 10 minutes at 30 fps
const KEEP_TARGETS = 20000;
const TARGET_COLOR = '#2e7d32'; // the dot: green, dotted, beside the red (right) and blue dashed (left) eyes
const TARGET_DASH = [2, 3];
const TEST_NAMES = {
  pursuit: 'Smooth pursuit',
  saccades: 'Saccades',
  fixation: 'Fixation',
  nine_positions: 'Nine gaze positions',
  calibration: 'Calibration',
};
const STOPPED = {
  doctor: 'stopped by you',
  patient: 'the patient left the test',
  replaced: 'replaced by the next test',
  'stream restarted': "stopped: the patient's video restarted",
};
const EYES = ['right', 'left'];
const EYE_NAMES = { right: 'Right (OD)', left: 'Left (OS)' };

const fmt = (v, d = 1) => (Number.isFinite(v) ? v.toFixed(d) : '–');
const pct = (v) => (Number.isFinite(v) ? `${Math.round(100 * v)}%` : '–');

/** A plain ring buffer of the last `capacity` items. */
class Last {
  constructor(capacity) {
    this.capacity = capacity;
    this.items = [];
  }

  push(item) {
    this.items.push(item);
    if (this.items.length > this.capacity * 1.25) this.items.splice(0, this.items.length - this.capacity);
  }

  all() {
    return this.items.slice(-this.capacity);
  }
}

export class ExamPanel {
  /** `onChange()` is called when the traces need a redraw (a target or a mark arrived). */
  constructor({ onChange } = {}) {
    this.onChange = onChange || (() => {});
    this.channel = null;
    this.frames = new Last(KEEP_FRAMES);
    this.targets = new Map(); // frame time -> {yaw, pitch, id}: the dot at that frame
    this.tests = []; // {started, result}
    this.live = null;
    this.liveLog = new Last(600); // once a second: 10 minutes
    this.marks = []; // {t, label, note, at}
    this.running = null;
    this.closeupVideo = $('closeup-video');
    this.status = $('exam-status');
    this.stopButton = $('exam-stop');
    this.state = { status: 'idle', results: [], targets: 0, live: null, marks: this.marks, closeupFrames: 0,
      downloads: [] };
    if (window.maskproxy) window.maskproxy.exam = this.state;
    this.#wire();
  }

  /** The "mask" data channel of the current connection (commands go out on it). */
  attach(channel) {
    this.channel = channel;
    channel.addEventListener('open', () => this.#sendView()); // a new connection: tell the proxy what is shown
  }

  /** Every frame's parameters (kept for export). */
  onFrame(msg) {
    if (!Number.isFinite(msg.t)) return;
    const last = this.frames.items[this.frames.items.length - 1];
    if (last && msg.t < last.t) this.targets.clear(); // the proxy's clock restarted
    this.frames.push(msg);
  }

  /** A trace series for the dot along `axis` ('yaw' or 'pitch'), for drawTraces. */
  targetSeries(axis) {
    return { color: TARGET_COLOR, dash: TARGET_DASH, value: (s) => this.targets.get(s.t)?.[axis] ?? null };
  }

  /** Marks as vertical lines on the traces. */
  events() {
    return this.marks;
  }

  onMessage(msg) {
    if (msg.exam_target) this.#target(msg.exam_target);
    else if (msg.exam_live) this.#live(msg.exam_live);
    else if (msg.exam_started) this.#started(msg.exam_started);
    else if (msg.exam_result) this.#result(msg.exam_result);
  }

  showCloseup(track) {
    this.closeupVideo.srcObject = new MediaStream([track]);
    this.closeupVideo.play().catch(() => {});
  }

  countCloseupFrames(n) {
    this.state.closeupFrames += n;
  }

  /* ---------- commands ---------- */

  #wire() {
    for (const button of document.querySelectorAll('#exam-buttons button[data-test]')) {
      button.addEventListener('click', () => {
        const command = { test: button.dataset.test };
        if (button.dataset.eye) command.eye = button.dataset.eye;
        if (command.test === 'fixation') command.duration_s = 10;
        this.#send({ exam: command });
      });
    }
    $('closeup-toggle').addEventListener('change', (event) => {
      $('closeup').classList.toggle('collapsed', !event.target.checked);
      this.closeupVideo.hidden = !event.target.checked;
      this.#sendView();
    });
    $('mark').addEventListener('click', () => this.mark());
    $('export-csv').addEventListener('click', () => this.download('csv'));
    $('export-json').addEventListener('click', () => this.download('json'));
    $('export-png').addEventListener('click', () => this.download('png'));
  }

  #send(message) {
    if (!this.channel || this.channel.readyState !== 'open') {
      this.#setStatus('Not connected: the test cannot start.');
      return;
    }
    this.channel.send(JSON.stringify(message));
    if (message.exam.test !== 'stop') this.#setStatus(`Asking the patient's page to start: ${TEST_NAMES[message.exam.test]}…`);
  }

  /** The proxy draws the close-up only while this page shows it. */
  #sendView() {
    if (this.channel?.readyState === 'open') {
      this.channel.send(JSON.stringify({ closeup: { on: $('closeup-toggle').checked } }));
    }
  }

  #setStatus(text, state) {
    this.status.textContent = text;
    if (state) this.state.status = state;
  }

  /* ---------- messages from the proxy ---------- */

  #started(started) {
    this.running = started;
    this.tests.push({ started, result: null });
    this.stopButton.disabled = false;
    const screen = started.screen || {};
    const scale = screen.scale_source === 'assumed'
      ? 'the patient has not measured the screen (angles may be 20–40% off)' : `screen scale from the ${screen.scale_source}`;
    const distance = screen.distance_source === 'typed' ? 'typed' : screen.distance_source === 'face'
      ? "estimated from the face's size (±25%)" : 'assumed';
    this.#setStatus(`${TEST_NAMES[started.test]} running: ${fmt(started.lead_s, 0)} s instruction, then `
      + `${fmt(started.duration_s, 0)} s. Viewing distance ${fmt(screen.distance_mm / 10, 0)} cm (${distance}); ${scale}.`,
    'running');
    this.state.running = started.test;
    this.state.started = started;
  }

  #target(target) {
    this.targets.set(target.t, { yaw: target.yaw, pitch: target.pitch, id: target.id });
    if (this.targets.size > KEEP_TARGETS) this.targets.delete(this.targets.keys().next().value);
    this.state.targets += 1;
    this.onChange();
  }

  #result(result) {
    const entry = this.tests.find((e) => e.started.id === result.id);
    if (entry) entry.result = result;
    else this.tests.push({ started: null, result });
    if (this.running?.id === result.id) this.running = null;
    this.stopButton.disabled = this.running === null;
    this.state.running = this.running?.test ?? null;
    this.state.results.push(result);
    const how = result.stopped ? ` (${STOPPED[result.stopped] || `stopped: ${result.stopped}`})` : '';
    this.#setStatus(`${TEST_NAMES[result.test]} finished${how}. Results below.`, 'result');
    renderResult($('exam-result'), result);
  }

  #live(live) {
    this.live = live;
    this.liveLog.push(live);
    this.state.live = live;
    renderLive(live);
  }

  /* ---------- marks and export ---------- */

  /** Put a mark at the newest frame's time; it shows on the traces and goes into the export. */
  mark() {
    const last = this.frames.items[this.frames.items.length - 1];
    if (!last) return;
    const note = $('mark-note').value.trim().slice(0, 200);
    const mark = { t: last.t, label: `M${this.marks.length + 1}`, note, at: new Date().toISOString() };
    this.marks.push(mark);
    $('mark-note').value = '';
    $('marks').textContent = this.marks.map((m) => `${m.label}${m.note ? `: ${m.note}` : ''}`).join(' · ');
    this.onChange();
  }

  /** What the export holds: the last minutes of parameters (with the dot where a test ran), tests, marks. */
  exportData() {
    const frames = this.frames.all().map((f) => {
      const target = this.targets.get(f.t);
      return target ? { ...f, target_yaw: target.yaw, target_pitch: target.pitch, test_id: target.id } : f;
    });
    return {
      exported_at: new Date().toISOString(),
      note: 'Mask parameters of the patient\'s avatar as received by this page (no picture), with the guided tests '
        + 'and their results; angles in degrees, lids in eye widths, MRD in mm (see the units of each result).',
      span_s: frames.length ? [frames[0].t, frames[frames.length - 1].t] : null,
      frames,
      tests: this.tests,
      live: this.liveLog.all(),
      marks: this.marks,
    };
  }

  download(kind) {
    const stamp = new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19);
    const name = `eye-exam-${stamp}.${kind}`;
    if (kind === 'png') {
      tracesPicture(this.marks).toBlob((blob) => this.#save(blob, name));
      return;
    }
    const data = this.exportData();
    const text = kind === 'json' ? JSON.stringify(data, null, 1) : toCsv(data);
    this.#save(new Blob([text], { type: kind === 'json' ? 'application/json' : 'text/csv' }), name);
  }

  #save(blob, name) {
    if (!blob) return;
    const url = URL.createObjectURL(blob);
    const link = document.createElement('a');
    link.href = url;
    link.download = name;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
    this.state.downloads.push(name);
  }
}

/* ---------- results ---------- */

function cell(row, text, header = false) {
  const el = document.createElement(header ? 'th' : 'td');
  el.textContent = text;
  if (header) el.scope = 'col';
  row.append(el);
}

function table(columns, rows) {
  const t = document.createElement('table');
  t.className = 'eye-table exam-table';
  const head = t.createTHead().insertRow();
  for (const c of columns) cell(head, c, true);
  const body = t.createTBody();
  for (const r of rows) {
    const row = body.insertRow();
    for (const v of r) cell(row, v);
  }
  return t;
}

const signedDeg = (v) => (Number.isFinite(v) ? `${v >= 0 ? '+' : '−'}${Math.abs(v).toFixed(1)}°` : '–');
const eyeName = (r) => EYE_NAMES[r.eye] || r.eye;
const pd = (value, name) => (Number.isFinite(value) ? `${value.toFixed(1)} Δ ${name || ''}`.trim() : '–');

/** Columns and rows for one kind of result. */
function resultTable(measure, results) {
  switch (measure) {
    case 'pursuit':
      return table(['Eye', 'Direction', 'Gain', 'Catch-up saccades', 'Back-up saccades', 'Frames measured'],
        results.map((r) => [eyeName(r), r.axis, fmt(r.gain, 2), r.catch_up_saccades ?? '–', r.back_up_saccades ?? '–',
          pct(r.valid_fraction)]));
    case 'saccades':
      return table(['Eye', 'Direction', 'Latency (median)', 'Latency IQR', 'Gain', 'Measured / jumps', 'Anticipations',
        'Missed'], results.map((r) => [eyeName(r), r.axis, Number.isFinite(r.latency_ms) ? `${fmt(r.latency_ms, 0)} ms` : '–',
        Number.isFinite(r.latency_iqr_ms) ? `${fmt(r.latency_iqr_ms, 0)} ms` : '–', fmt(r.gain, 2),
        `${r.measured} / ${r.jumps}`, r.anticipations, r.missed]));
    case 'fixation':
      return table(['Eye', 'BCEA (68%)', 'SD horizontal', 'SD vertical', 'Samples'],
        results.map((r) => [eyeName(r), Number.isFinite(r.bcea_deg2) ? `${fmt(r.bcea_deg2, 2)} deg²` : '–',
          signedDeg(r.sd_yaw_deg).replace('+', ''), signedDeg(r.sd_pitch_deg).replace('+', ''), r.samples]));
    case 'deviation':
      return table(['Horizontal', 'Vertical', 'Error', 'Note'], results.map((r) => [pd(r.horizontal_pd, r.horizontal),
        pd(r.vertical_pd, r.vertical), Number.isFinite(r.error_pd) ? `± ${fmt(r.error_pd)} Δ` : '–', r.reason || '']));
    case 'gaze_position':
      return table(['Position', 'Target', 'Right eye', 'Left eye', 'R − L change (h / v)', 'Deviation'],
        results.map((r) => [r.position, `${signedDeg(r.target_yaw)} / ${signedDeg(r.target_pitch)}`,
          `${signedDeg(r.right_yaw)} / ${signedDeg(r.right_pitch)}`, `${signedDeg(r.left_yaw)} / ${signedDeg(r.left_pitch)}`,
          `${signedDeg(r.change_horizontal_deg)} / ${signedDeg(r.change_vertical_deg)}`,
          r.calibrated ? `${pd(r.horizontal_pd, r.horizontal)}, ${pd(r.vertical_pd, r.vertical)}` : 'not calibrated']));
    case 'calibration':
      return table(['Eye', 'Calibrated', 'Residual error', 'Precision', 'Points', 'Note'],
        results.map((r) => [eyeName(r), r.calibrated ? 'yes' : 'no', Number.isFinite(r.residual_deg) ? `${fmt(r.residual_deg)}°` : '–',
          Number.isFinite(r.precision_deg) ? `${fmt(r.precision_deg)}°` : '–', r.points ?? '–', r.error || '']));
    default:
      return table(['Result'], results.map((r) => [JSON.stringify(r)]));
  }
}

function renderResult(container, result) {
  container.replaceChildren();
  const title = document.createElement('h3');
  title.textContent = `${TEST_NAMES[result.test] || result.test} — result${result.stopped ? ` (${STOPPED[result.stopped] || result.stopped})` : ''}`;
  container.append(title);
  const byMeasure = new Map();
  for (const r of result.results || []) {
    if (!byMeasure.has(r.measure)) byMeasure.set(r.measure, []);
    byMeasure.get(r.measure).push(r);
  }
  if (!byMeasure.size) {
    const p = document.createElement('p');
    p.textContent = 'No result: the test stopped before the dot started.';
    container.append(p);
  }
  for (const [measure, results] of byMeasure) container.append(resultTable(measure, results));
  const q = result.quality || {};
  const notes = [];
  if (Number.isFinite(q.frames)) {
    notes.push(`${q.frames} frames; right eye measured in ${pct(q.right_measured)}, left in ${pct(q.left_measured)}; `
      + `the head turned by ${fmt(q.head_motion_deg)}°.`);
  }
  if (q.warning) notes.push(`Warning: ${q.warning}.`);
  if ((result.results || []).some((r) => r.calibrated === false && r.measure !== 'calibration')) {
    notes.push('Not calibrated: angles are the tracker\'s own, which differ from person to person; calibrate each eye '
      + 'for degrees of visual angle and prism dioptres.');
  }
  const caveats = [...new Set((result.results || []).map((r) => r.caveat).filter(Boolean))];
  for (const text of notes) {
    const p = document.createElement('p');
    p.className = 'hint';
    p.textContent = text;
    container.append(p);
  }
  if (caveats.length) {
    const details = document.createElement('details');
    details.className = 'caveats';
    details.open = true;
    const summary = document.createElement('summary');
    summary.textContent = 'What a webcam can and cannot measure here';
    details.append(summary);
    for (const text of caveats) {
      const p = document.createElement('p');
      p.textContent = text;
      details.append(p);
    }
    container.append(details);
  }
  container.hidden = false;
}

/* ---------- live readouts ---------- */

function setText(id, text) {
  const el = $(id);
  if (el && el.textContent !== text) el.textContent = text;
}

function renderLive(live) {
  const byEye = (list) => Object.fromEntries((list || []).map((r) => [r.eye, r]));
  const lids = byEye(live.lids);
  const nys = byEye(live.nystagmus);
  const blinks = byEye(live.blinks);
  for (const eye of EYES) {
    const p = eye[0];
    const lid = lids[eye] || {};
    setText(`x-${p}-mrd1`, Number.isFinite(lid.mrd1_mm) ? `${fmt(lid.mrd1_mm)} mm` : '–');
    setText(`x-${p}-mrd2`, Number.isFinite(lid.mrd2_mm) ? `${fmt(lid.mrd2_mm)} mm` : '–');
    setText(`x-${p}-fissure`, Number.isFinite(lid.fissure_mm) ? `${fmt(lid.fissure_mm)} mm` : '–');
    setText(`x-${p}-ptosis`, lid.ptosis === true ? 'PTOSIS' : lid.ptosis === false ? 'no' : '–');
    $(`x-${p}-ptosis`)?.classList.toggle('flag', lid.ptosis === true);
    const n = nys[eye] || {};
    setText(`x-${p}-nys`, n.detected
      ? `${fmt(n.frequency_hz)} Hz, ${fmt(n.amplitude_deg)}° ${n.direction}, ${n.beating}${n.conjugate === true
        ? ', conjugate' : n.conjugate === false ? ', not conjugate' : ''} (confidence ${fmt(n.confidence, 2)})`
      : 'none seen');
    const b = blinks[eye] || {};
    setText(`x-${p}-blinks`, Number.isFinite(b.rate_per_min) ? `${fmt(b.rate_per_min, 0)} / min` : `${b.count ?? 0} so far`);
    setText(`x-${p}-incomplete`, `${b.incomplete ?? 0} of ${(b.complete ?? 0) + (b.incomplete ?? 0)} classified`);
  }
  const d = live.deviation || {};
  setText('x-deviation', d.calibrated && Number.isFinite(d.horizontal_pd)
    ? `${pd(d.horizontal_pd, d.horizontal)}, ${pd(d.vertical_pd, d.vertical)} (± ${fmt(d.error_pd)} Δ), last 2 s`
    : d.reason || '–');
  const cal = live.calibration || {};
  setText('x-calibration', EYES.map((eye) => {
    const c = cal[eye] || {};
    return `${EYE_NAMES[eye]}: ${c.calibrated ? `calibrated, residual ${fmt(c.residual_deg)}°` : 'not calibrated'}`;
  }).join(' · '));
}

/* ---------- export ---------- */

function csvValue(v) {
  if (v === null || v === undefined) return '';
  const s = typeof v === 'object' ? JSON.stringify(v) : String(v);
  return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/** The frames as CSV (one row per frame, the dot and the marks beside), then the tests' results. */
function toCsv(data) {
  const columns = [];
  for (const f of data.frames) for (const k of Object.keys(f)) if (!columns.includes(k)) columns.push(k);
  columns.push('mark');
  const markAt = new Map(data.marks.map((m) => [m.t, `${m.label}${m.note ? `: ${m.note}` : ''}`]));
  const lines = [columns.join(',')];
  for (const f of data.frames) lines.push(columns.map((c) => csvValue(c === 'mark' ? markAt.get(f.t) : f[c])).join(','));
  lines.push('', 'test_id,test,measure,eye,axis,result');
  for (const { started, result } of data.tests) {
    for (const r of result?.results || []) {
      const { measure, eye, axis, units, caveat, ...rest } = r;
      lines.push([result.id, result.test, measure, eye ?? '', axis ?? r.position ?? '', JSON.stringify(rest)].map(csvValue).join(','));
    }
    if (!result && started) lines.push([started.id, started.test, 'not finished', '', '', ''].join(','));
  }
  return `${lines.join('\n')}\n`;
}

/** The three trace plots of the page, one under the other, with a title and the marks, as one canvas. */
function tracesPicture(marks) {
  const ids = [['gaze-yaw', 'Horizontal gaze (deg, + toward picture right)'], ['gaze-pitch', 'Vertical gaze (deg, + up)'],
    ['aperture', 'Lid opening (fissure height / eye width)']];
  const sources = ids.map(([id, title]) => [$(id), title]).filter(([c]) => c && c.width);
  const width = Math.max(...sources.map(([c]) => c.width), 400);
  const titleH = 28;
  const height = 40 + sources.reduce((h, [c]) => h + c.height + titleH, 0) + 24;
  const out = document.createElement('canvas');
  out.width = width;
  out.height = height;
  const ctx = out.getContext('2d');
  ctx.fillStyle = '#fff';
  ctx.fillRect(0, 0, width, height);
  ctx.fillStyle = '#1b2530';
  ctx.font = 'bold 18px system-ui, sans-serif';
  ctx.fillText(`Eye movement traces, ${new Date().toLocaleString()} — right eye red, left eye blue dashed, target green dotted`, 12, 26);
  let y = 40;
  ctx.font = '15px system-ui, sans-serif';
  for (const [canvas, title] of sources) {
    ctx.fillText(title, 12, y + 18);
    y += titleH;
    ctx.drawImage(canvas, 0, y);
    y += canvas.height;
  }
  ctx.font = '13px system-ui, sans-serif';
  ctx.fillText(marks.length ? `Marks: ${marks.map((m) => `${m.label}${m.note ? ` (${m.note})` : ''}`).join(', ')}` : 'No marks',
    12, height - 8);
  return out;
}
