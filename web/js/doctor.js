// Doctor page: masked patient video, own camera, and live eye-movement traces
// built from the per-frame mask parameters on the "mask" data channel.

import { roomFromUrl, pollRoomStatus, checkLink, forgetLink, isGone, LINK_INVALID } from './api.js';
import { ENDED_TITLE, endedDetail, leftText, ExpiryNotice } from './notices.js';
import { Call, openMaskChannel, playWithSound, countFrames, mediaSupported } from './rtc.js';
import { RingBuffer, BlinkDetector, drawTraces } from './traces.js';
import { ExamPanel } from './exam.js';
import { RecordingPanel } from './recording.js';

const $ = (id) => document.getElementById(id);
const patientVideo = $('patient-video');
const selfView = $('self-view');
const freezeFrame = $('freeze-frame');
const freezeButton = $('freeze');
const statusBadge = $('status');
const message = $('message');
const retryButton = $('retry');
const soundButton = $('sound');

const SPAN_S = 10; // seconds of history shown in the traces
const DIFF_WINDOW_S = 0.5; // R − L is averaged over this long to steady the number
// R − L is shown as its change from its own median over the last BASELINE_S: without a calibration of
// the patient's eyes its absolute value is uncertain by several degrees from person to person, so it is
// not a deviation to read in prism dioptres; its changes (a drift, a tropia appearing) are measured.
const BASELINE_S = 120;
const BASELINE_MIN_SAMPLES = 30;
const READOUT_INTERVAL_MS = 200;
const COLORS = { right: '#c62828', left: '#1565c0' }; // right red, left blue (with dashes for colour-blind users)
const LEFT_DASH = [6, 3];
const DROP_WINDOW_MS = 30000; // dropped frames are shown as a share of this recent stretch, not a growing count
// below this the camera's compression adds noticeably to the eye signals' error (proxy/consult/stats.py)
const LOW_CAMERA_KBPS = 1000;

const samples = new RingBuffer(2048); // ~10 s at up to 200 fps; older samples fall out
const vergence = new RingBuffer(8192); // {t, yaw, pitch}: R − L where both eyes were measured, for the baseline
const blinks = { right: new BlinkDetector(), left: new BlinkDetector() };
let stats = null;
let frozen = null; // {samples, tEnd} snapshot while frozen
let dirty = true; // traces need a redraw

// Exposed for automated tests.
const mp = (window.maskproxy = { framesShown: 0, lastParams: null, samples, blinks, stats: null, frozen: false });

const params = roomFromUrl();
// Recording: Record / Stop in the top bar, the red bar while it runs (recording.js).
const recording = params
  ? new RecordingPanel({ role: 'doctor', room: params.room, token: params.token, controls: document.querySelector('.topbar') })
  : null;
let localStream = null;
let call = null;
let stopPolling = null;
let patientWasHere = false;
let ended = false;
const expiry = new ExpiryNotice($('notice'));
const dropHistory = []; // {at, dropped, masked}: the proxy's counters over the last DROP_WINDOW_MS
// The eye examination: guided tests, the target in the traces, results, readouts, marks, export, the close-up.
const exam = new ExamPanel({ onChange: () => { dirty = true; } });

function showMessage(text) {
  message.textContent = text || '';
  message.hidden = !text;
}

const fmtDeg = (v) => (Number.isFinite(v) ? `${v >= 0 ? '+' : '−'}${Math.abs(v).toFixed(1)}°` : '–');
const fmtNum = (v, d = 2) => (Number.isFinite(v) ? v.toFixed(d) : '–');
// Horizontal gaze per eye in clinical terms. Yaw is + toward the right of the picture, the patient's left:
// toward the nose (adduction) for the right eye, toward the temple (abduction) for the left.
const fmtHorizontal = (side) => (v) => {
  if (!Number.isFinite(v)) return '–';
  const deg = Math.abs(v).toFixed(1);
  if (deg === '0.0') return '0.0°';
  return `${deg}° ${(side === 'right') === v > 0 ? 'nasal' : 'temporal'}`;
};
const num = (v) => (Number.isFinite(v) ? v : null);
// A difference only where both values were measured (null − x would be −x in JavaScript).
const diff = (a, b) => (Number.isFinite(a) && Number.isFinite(b) ? a - b : NaN);

/* ---------- media and connection ---------- */

/** Camera and mic are optional for the doctor: try both, then each alone. */
async function getDoctorMedia() {
  if (!mediaSupported()) return null;
  const video = { width: 640, height: 480 };
  for (const constraints of [{ video, audio: true }, { audio: true }, { video }]) {
    try {
      return await navigator.mediaDevices.getUserMedia(constraints);
    } catch {
      // try the next, smaller request
    }
  }
  return null;
}

/** Transceivers in the order the server expects: (0) video, (1) the eye close-up, (2) audio, then the data channel. */
function setupPeer(pc) {
  const videoTrack = localStream?.getVideoTracks()[0];
  const audioTrack = localStream?.getAudioTracks()[0];
  const videoTr = videoTrack
    ? pc.addTransceiver(videoTrack, { direction: 'sendrecv', streams: [localStream] })
    : pc.addTransceiver('video', { direction: 'recvonly' });
  const closeupTr = pc.addTransceiver('video', { direction: 'recvonly' });
  const audioTr = audioTrack
    ? pc.addTransceiver(audioTrack, { direction: 'sendrecv', streams: [localStream] })
    : pc.addTransceiver('audio', { direction: 'recvonly' });

  const remote = new MediaStream();
  pc.addEventListener('track', (event) => {
    if (event.transceiver === closeupTr) exam.showCloseup(event.track);
    if (event.transceiver !== videoTr && event.transceiver !== audioTr) return;
    remote.addTrack(event.track);
    if (patientVideo.srcObject !== remote) {
      patientVideo.srcObject = remote;
      playWithSound(patientVideo, (unmute) => {
        soundButton.hidden = false;
        soundButton.onclick = async () => {
          await unmute();
          soundButton.hidden = true;
        };
      });
    }
  });

  exam.attach(openMaskChannel(pc, {
    onFrame, onStats, onExam: (msg) => exam.onMessage(msg), onRecording: (status) => recording?.update(status),
  }));
}

const STATE_TEXT = {
  connecting: 'Connecting…',
  connected: 'Connected',
  disconnected: 'Connection unstable…',
  reconnecting: 'Reconnecting…',
  failed: 'Not connected',
  closed: 'Closed',
  ended: 'Consult ended',
};

function onCallState(state, detail) {
  if (ended) return; // nothing comes after the end (closing the call reports 'closed')
  if (state === 'ended') {
    endConsult(detail.reason);
    return;
  }
  mp.state = state;
  statusBadge.dataset.state = state;
  statusBadge.textContent = STATE_TEXT[state] || state;
  retryButton.hidden = state !== 'failed';
  if (state === 'reconnecting') showMessage(`Connection interrupted. Reconnecting (try ${detail.attempt} of ${detail.max})…`);
  else if (state === 'failed' && detail.replaced) {
    showMessage('This consult is now open in another tab or window. Press "Try again" to bring it back here.');
  } else if (state === 'failed') showMessage(`Could not connect: ${detail.message}`);
  else if (state === 'connected') showMessage(missingDevicesText());
}

function missingDevicesText() {
  const cam = Boolean(localStream?.getVideoTracks().length);
  const mic = Boolean(localStream?.getAudioTracks().length);
  if (!cam && !mic) return 'Your camera and microphone are not available: the patient can neither see nor hear you.';
  if (!cam) return 'Your camera is not available, so the patient cannot see you (they can hear you).';
  if (!mic) return 'Your microphone is not available, so the patient cannot hear you.';
  return '';
}

/* ---------- mask data ---------- */

function onFrame(msg) {
  if (!Number.isFinite(msg.t)) return;
  const last = samples.last();
  if (last && msg.t < last.t) samples.clear(); // server clock restarted (e.g. after a reconnect)
  samples.push(msg);
  exam.onFrame(msg);
  mp.lastParams = msg;
  const face = msg.face === true;
  if (last && msg.t < last.t) vergence.clear();
  if (face) {
    const yaw = diff(msg.right_gaze_yaw, msg.left_gaze_yaw);
    const pitch = diff(msg.right_gaze_pitch, msg.left_gaze_pitch);
    if (Number.isFinite(yaw) || Number.isFinite(pitch)) vergence.push({ t: msg.t, yaw, pitch });
  }
  blinks.right.update(msg.t, face ? msg.right_aperture : NaN);
  blinks.left.update(msg.t, face ? msg.left_aperture : NaN);
  dirty = true;
}

let channelStatsAt = 0;
function onStats(s, fromChannel = true) {
  if (!fromChannel && Date.now() - channelStatsAt < 3000) return; // prefer the live channel stats
  if (fromChannel) channelStatsAt = Date.now();
  stats = s;
  mp.stats = s;
  recordDrops(s);
}

function recordDrops(s) {
  if (!Number.isFinite(s?.dropped) || !Number.isFinite(s?.masked)) return;
  const now = Date.now();
  const last = dropHistory[dropHistory.length - 1];
  if (last && (s.dropped < last.dropped || s.masked < last.masked)) dropHistory.length = 0; // counters restarted
  dropHistory.push({ at: now, dropped: s.dropped, masked: s.masked });
  while (dropHistory.length > 2 && dropHistory[1].at <= now - DROP_WINDOW_MS) dropHistory.shift();
}

/** Percent of the camera's frames the proxy dropped over the last 30 s (null until two counts are known). */
function droppedShare() {
  if (dropHistory.length < 2) return null;
  const first = dropHistory[0];
  const last = dropHistory[dropHistory.length - 1];
  const dropped = last.dropped - first.dropped;
  const total = dropped + last.masked - first.masked;
  return total > 0 ? (100 * dropped) / total : null;
}

/* ---------- drawing ---------- */

const gaze = (eye, axis) => (s) => (s.face ? num(s[`${eye}_gaze_${axis}`]) : null);
const aperture = (eye) => (s) => (s.face ? num(s[`${eye}_aperture`]) : null);
const pair = (fn) => [
  { color: COLORS.right, value: fn('right') },
  { color: COLORS.left, dash: LEFT_DASH, value: fn('left') },
];

const plots = [
  { canvas: $('gaze-yaw'), series: [...pair((e) => gaze(e, 'yaw')), exam.targetSeries('yaw')], y: { range: [-30, 30], step: 10, unit: '°', expand: true } },
  { canvas: $('gaze-pitch'), series: [...pair((e) => gaze(e, 'pitch')), exam.targetSeries('pitch')], y: { range: [-20, 20], step: 10, unit: '°', expand: true } },
  {
    canvas: $('aperture'),
    series: pair(aperture),
    y: { range: [0, 0.5], step: 0.1, decimals: 1, expand: true },
    marks: [{ value: 0.12, label: 'closed' }, { value: 0.18, label: 'open' }],
  },
];

const resizeObserver = new ResizeObserver(() => {
  dirty = true;
});
plots.forEach((p) => resizeObserver.observe(p.canvas));

/** What to display: the frozen snapshot, or the live last 10 s. */
function currentView() {
  if (frozen) return frozen;
  const tEnd = samples.last()?.t ?? SPAN_S;
  return { tEnd, samples: samples.since(tEnd - SPAN_S - 0.5) };
}

function mean(list, fn) {
  let sum = 0;
  let n = 0;
  for (const s of list) {
    const v = fn(s);
    if (Number.isFinite(v)) {
      sum += v;
      n += 1;
    }
  }
  return n ? sum / n : NaN;
}

function median(values) {
  const sorted = values.filter(Number.isFinite).sort((a, b) => a - b);
  if (sorted.length < BASELINE_MIN_SAMPLES) return NaN;
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** Change of R − L (last 0.5 s) from its median over the BASELINE_S before `tEnd`; NaN until known. */
function vergenceChange(recent, axis, tEnd) {
  const now = mean(recent, (s) => diff(s[`right_gaze_${axis}`], s[`left_gaze_${axis}`]));
  const history = vergence.since(tEnd - BASELINE_S).filter((v) => v.t <= tEnd);
  return now - median(history.map((v) => v[axis]));
}

function setText(id, text) {
  const el = $(id);
  if (el.textContent !== text) el.textContent = text;
}

function updateReadouts(view) {
  const last = view.samples[view.samples.length - 1];
  const face = last?.face === true;
  // an eye that could not be measured shows why (closed, covered, turned away, ...) instead of a number
  const eye = (side, key, fmt) => {
    if (!face) return '–';
    const value = last[`${side}_${key}`];
    if (Number.isFinite(value)) return fmt(value);
    const state = last[`${side}_state`];
    return typeof state === 'string' && state !== 'measured' ? state : '–';
  };
  setText('r-yaw', eye('right', 'gaze_yaw', fmtHorizontal('right')));
  setText('l-yaw', eye('left', 'gaze_yaw', fmtHorizontal('left')));
  setText('r-pitch', eye('right', 'gaze_pitch', fmtDeg));
  setText('l-pitch', eye('left', 'gaze_pitch', fmtDeg));
  setText('r-ap', eye('right', 'aperture', fmtNum));
  setText('l-ap', eye('left', 'aperture', fmtNum));

  const recent = view.samples.filter((s) => s.face && s.t >= view.tEnd - DIFF_WINDOW_S);
  setText('d-yaw', fmtDeg(vergenceChange(recent, 'yaw', view.tEnd)));
  setText('d-pitch', fmtDeg(vergenceChange(recent, 'pitch', view.tEnd)));
  setText('head', face ? `${fmtDeg(last.head_yaw)} / ${fmtDeg(last.head_pitch)} / ${fmtDeg(last.head_roll)}` : '–');
  setText('face', last ? (face ? 'Yes' : 'No') : '–');

  for (const [eye, prefix] of [['right', 'r'], ['left', 'l']]) {
    setText(`${prefix}-blinks`, String(blinks[eye].count));
    const rate = blinks[eye].ratePerMinute();
    setText(`${prefix}-rate`, rate === null ? '–' : rate.toFixed(0));
  }

  setText('fps', Number.isFinite(stats?.fps) ? `${stats.fps.toFixed(1)} fps` : '–');
  const lat = stats?.latency_ms;
  setText('latency', lat && Number.isFinite(lat.p50) ? `${lat.p50.toFixed(0)} / ${lat.p95.toFixed(0)} ms` : '–');
  const share = droppedShare();
  setText('dropped', share === null ? '–' : `${share.toFixed(share < 10 ? 1 : 0)}%`);
  const kbps = stats?.camera_kbps;
  setText('camera', !Number.isFinite(kbps) ? '–' : kbps < 1000 ? `${kbps.toFixed(0)} kbit/s`
    : `${(kbps / 1000).toFixed(1)} Mbit/s`);
  document.getElementById('camera').dataset.low = String(Number.isFinite(kbps) && kbps < LOW_CAMERA_KBPS);
}

let lastReadout = 0;
function animate(now) {
  requestAnimationFrame(animate);
  const view = dirty || now - lastReadout > READOUT_INTERVAL_MS ? currentView() : null;
  if (dirty) {
    dirty = false;
    for (const p of plots) {
      drawTraces(p.canvas, view.samples, { tEnd: view.tEnd, span: SPAN_S, series: p.series, y: p.y, marks: p.marks,
        events: exam.events() });
    }
  }
  if (now - lastReadout > READOUT_INTERVAL_MS) {
    lastReadout = now;
    updateReadouts(view);
  }
}
requestAnimationFrame(animate);

/* ---------- freeze ---------- */

function setFrozen(on) {
  if (on) {
    const view = currentView();
    frozen = { tEnd: view.tEnd, samples: view.samples };
    // Keep the current picture: copy it into a canvas laid over the (still running) video.
    if (patientVideo.videoWidth) {
      freezeFrame.width = patientVideo.videoWidth;
      freezeFrame.height = patientVideo.videoHeight;
      freezeFrame.getContext('2d').drawImage(patientVideo, 0, 0);
      freezeFrame.hidden = false;
    }
  } else {
    frozen = null;
    freezeFrame.hidden = true;
  }
  mp.frozen = on;
  $('frozen-label').hidden = !on;
  freezeButton.textContent = on ? 'Resume' : 'Freeze';
  freezeButton.setAttribute('aria-pressed', String(on));
  dirty = true;
  lastReadout = 0; // refresh the numbers at once
}

freezeButton.addEventListener('click', () => setFrozen(!frozen));

$('reset-blinks').addEventListener('click', () => {
  blinks.right.reset();
  blinks.left.reset();
  lastReadout = 0;
});

/* ---------- start ---------- */

countFrames(patientVideo, (n) => {
  mp.framesShown += n;
});
countFrames($('closeup-video'), (n) => exam.countCloseupFrames(n));

async function main() {
  if (!params) {
    onCallState('failed', { message: 'this link is incomplete. Please open the full doctor link.' });
    retryButton.hidden = true;
    return;
  }
  if (!mediaSupported()) {
    onCallState('failed', { message: 'this browser cannot make video calls here (it needs an up-to-date browser and an https:// address).' });
    retryButton.hidden = true;
    return;
  }
  // Check the link before the camera: a wrong, ended or patient link gets a plain answer, and no media.
  const link = await checkLink(params, 'doctor');
  if (!link.ok) {
    if (link.invalid) forgetLink();
    mp.state = link.invalid ? 'invalid' : 'failed';
    statusBadge.dataset.state = 'failed';
    statusBadge.textContent = link.invalid ? 'Link not valid' : 'Not connected';
    showMessage(link.invalid ? LINK_INVALID
      : `This link could not be checked just now (${link.message}). Reload the page to try again.`);
    retryButton.hidden = true;
    $('leave').hidden = true;
    return;
  }
  localStream = await getDoctorMedia();
  if (ended) {
    localStream?.getTracks().forEach((t) => t.stop()); // it ended while the browser asked for the camera
    return;
  }
  const ownVideo = localStream?.getVideoTracks()[0];
  if (ownVideo) selfView.srcObject = new MediaStream([ownVideo]);
  else selfView.hidden = true;

  call = new Call({ room: params.room, token: params.token, role: 'doctor', setup: setupPeer, onState: onCallState,
    onNotice });
  call.start();
  retryButton.addEventListener('click', () => call?.start());
  window.addEventListener('pagehide', () => call?.leave({ wait: false }));

  // The data channel says when the consult ends or the patient leaves; the poll is the fallback.
  stopPolling = pollRoomStatus(params.room, params.token, (status, err) => {
    if (err && isGone(err)) endConsult('gone');
    if (!status) return;
    showPatientPresence(Boolean(status.patient?.connected));
    recording?.update(status.recording);
    // Stats normally arrive on the data channel; the polled ones fill in when it is quiet.
    if (status.mask) onStats(status.mask, false);
  });
}

function showPatientPresence(here) {
  if (here) patientWasHere = true;
  const note = $('patient-waiting');
  note.textContent = here || !patientWasHere ? 'Waiting for the patient to join…' : 'The patient has left the consult.';
  note.hidden = here;
  setText('presence', here ? 'Patient is in the consult' : patientWasHere ? leftText('patient') : 'Patient has not joined yet');
}

/** The proxy's notices: the consult ends soon, or the patient left (not a fault of this connection). */
function onNotice(msg) {
  if ('expires_in' in msg) expiry.show(Number(msg.expires_in));
  if (msg.left === 'patient') {
    patientWasHere = true;
    showPatientPresence(false);
  }
}

/** Stop everything this page runs for the consult: the call, the poll, the camera and microphone. */
function stopConsult() {
  stopPolling?.();
  stopPolling = null;
  expiry.stop();
  localStream?.getTracks().forEach((t) => t.stop());
  localStream = null;
  selfView.srcObject = null;
  selfView.hidden = true;
  patientVideo.srcObject = null;
  retryButton.hidden = true;
  $('leave').hidden = true;
}

/** The consult is over: say so, with nothing to retry; the traces already drawn stay for reading. */
function endConsult(reason) {
  if (ended) return;
  ended = true;
  mp.state = 'ended';
  call?.close();
  call = null;
  stopConsult();
  statusBadge.dataset.state = 'ended';
  statusBadge.textContent = STATE_TEXT.ended;
  setText('presence', '');
  showMessage(`${ENDED_TITLE}. ${endedDetail(reason)}`);
  const note = $('patient-waiting');
  note.textContent = ENDED_TITLE;
  note.hidden = false;
}

$('leave').addEventListener('click', async () => {
  const leaving = call;
  call = null;
  stopConsult();
  await leaving?.leave(); // says goodbye first, so the patient hears "The doctor has left" at once
  mp.state = 'left';
  statusBadge.dataset.state = 'closed';
  statusBadge.textContent = 'You have left';
  showMessage('You have left the consult. Reload this page to join again.');
});

main();
