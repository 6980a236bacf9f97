// Patient page: send camera + microphone to the proxy, show the doctor and the
// MASKED self-view the proxy sends back. The raw camera is never shown here,
// so the patient sees exactly what the doctor sees.

import { roomFromUrl, pollRoomStatus, checkLink, forgetLink, isGone, LINK_INVALID } from './api.js';
import { ENDED_TITLE, endedDetail, ExpiryNotice } from './notices.js';
import { Call, openMaskChannel, playWithSound, countFrames, mediaErrorMessage, mediaSupported } from './rtc.js';
import { FixationTarget } from './fixation.js';
import { RecordingPanel } from './recording.js';

const $ = (id) => document.getElementById(id);
const intro = $('intro');
const introError = $('intro-error');
const startButton = $('start');
const callSection = $('call');
const leftSection = $('left');
const maskState = $('mask-state');
const doctorVideo = $('doctor-video');
const selfView = $('masked-self-view');
const doctorWaiting = $('doctor-waiting');
const callMessage = $('call-message');
const muteButton = $('mute');
const cameraButton = $('camera');
const soundButton = $('sound');
const retryButton = $('retry');
const endedSection = $('ended');
const stage = callSection.querySelector('.stage');
const pip = $('pip');
const expiry = new ExpiryNotice($('call-notice'));
const WAITING_FOR_DOCTOR = 'Waiting for the doctor to join…';
const DOCTOR_LEFT = 'The doctor has left the consult. Please wait: they may come back.';

const FACE_STALE_MS = 2000; // no per-frame message for this long: treat as "no face"

// Exposed for automated tests.
const mp = (window.maskproxy = { framesShown: 0, state: 'intro', face: false, lastParams: null });

const params = roomFromUrl();
// Recording: the consent dialog, the red bar while it runs, and the withdraw button (recording.js).
const recording = params ? new RecordingPanel({ role: 'patient', room: params.room, token: params.token }) : null;
let localStream = null;
let call = null;
let stopPolling = null;
let lastFrameAt = 0;
let doctorWasHere = false;
// The eye tests the doctor starts: a full-screen dot to follow, and the screen-size step they need.
const fixation = new FixationTarget();

function setState(state) {
  mp.state = state;
  updateBadge();
}

function showCallMessage(text) {
  callMessage.textContent = text || '';
  callMessage.hidden = !text;
}

/** The badge reflects the connection first, then whether the mask has found a face. */
function updateBadge() {
  const videoTrack = localStream?.getVideoTracks()[0];
  let key;
  let text;
  if (mp.state === 'intro' || mp.state === 'connecting' || mp.state === 'starting') [key, text] = ['connecting', 'Connecting…'];
  else if (mp.state === 'reconnecting' || mp.state === 'disconnected') [key, text] = ['connecting', 'Reconnecting…'];
  else if (mp.state === 'failed') [key, text] = ['error', 'Not connected'];
  else if (mp.state === 'closed') [key, text] = ['off', 'Left'];
  else if (mp.state === 'ended') [key, text] = ['off', ENDED_TITLE];
  else if (videoTrack && !videoTrack.enabled) [key, text] = ['off', 'Camera off'];
  else if (mp.face && Date.now() - lastFrameAt < FACE_STALE_MS) [key, text] = ['active', 'Mask active'];
  else [key, text] = ['searching', 'Looking for your face…'];
  if (maskState.dataset.state !== key || maskState.textContent !== text) {
    maskState.dataset.state = key;
    maskState.textContent = text;
  }
}
setInterval(updateBadge, 500); // catches a stale mask state when messages stop

/** Get camera + microphone; fall back to camera only if there is no microphone. */
async function getMedia() {
  const video = { width: 640, height: 480 };
  try {
    return await navigator.mediaDevices.getUserMedia({ video, audio: true });
  } catch (err) {
    if (err.name !== 'NotFoundError') throw err;
    return navigator.mediaDevices.getUserMedia({ video }); // no mic: still usable
  }
}

/** Add transceivers in the exact order the server expects (see the API notes). */
function setupPeer(pc) {
  const videoTrack = localStream.getVideoTracks()[0];
  const audioTrack = localStream.getAudioTracks()[0];
  // (0) camera out, masked self-view back
  const selfTr = pc.addTransceiver(videoTrack, { direction: 'sendrecv', streams: [localStream] });
  // (1) microphone out, doctor's audio back
  const audioTr = audioTrack
    ? pc.addTransceiver(audioTrack, { direction: 'sendrecv', streams: [localStream] })
    : pc.addTransceiver('audio', { direction: 'recvonly' });
  // (2) doctor's camera
  const doctorTr = pc.addTransceiver('video', { direction: 'recvonly' });

  const doctorStream = new MediaStream();
  pc.addEventListener('track', (event) => {
    // Identify by transceiver, never by arrival order.
    if (event.transceiver === selfTr) {
      selfView.srcObject = new MediaStream([event.track]);
      selfView.play().catch(() => {});
    } else if (event.transceiver === audioTr || event.transceiver === doctorTr) {
      doctorStream.addTrack(event.track);
      if (doctorVideo.srcObject !== doctorStream) {
        doctorVideo.srcObject = doctorStream;
        playWithSound(doctorVideo, offerSoundButton);
      }
    }
  });

  const channel = openMaskChannel(pc, {
    onExam: (msg) => fixation.onMessage(msg),
    onRecording: (status) => recording?.update(status),
    onFrame(msg) {
      mp.lastParams = msg;
      mp.face = msg.face === true;
      lastFrameAt = Date.now();
      updateBadge();
    },
  });
  fixation.attach(channel);
}

function offerSoundButton(unmute) {
  soundButton.hidden = false;
  soundButton.onclick = async () => {
    await unmute();
    soundButton.hidden = true;
  };
}

function onCallState(state, detail) {
  if (mp.state === 'ended') return; // nothing comes after the end (closing the call reports 'closed')
  if (state === 'ended') {
    endConsult(detail.reason);
    return;
  }
  setState(state);
  retryButton.hidden = state !== 'failed';
  switch (state) {
    case 'connected':
      showCallMessage('');
      break;
    case 'reconnecting':
      showCallMessage(`The connection was interrupted. Reconnecting (try ${detail.attempt} of ${detail.max})…`);
      break;
    case 'failed':
      showCallMessage(detail.replaced
        ? 'This consult is now open in another tab or window. Press "Try again" to bring it back here.'
        : `Could not connect: ${detail.message}`);
      break;
    default:
      break;
  }
}

function joinCall() {
  mp.face = false;
  call = new Call({ room: params.room, token: params.token, role: 'patient', setup: setupPeer, onState: onCallState,
    onNotice });
  call.start();
  // The data channel says when the consult ends or the doctor leaves; the poll is the fallback.
  stopPolling = pollRoomStatus(params.room, params.token, (status, err) => {
    if (err && isGone(err)) endConsult('gone');
    if (status) showDoctorPresence(Boolean(status.doctor?.connected));
    if (status) recording?.update(status.recording);
  });
}

function showDoctorPresence(here) {
  if (here) doctorWasHere = true;
  doctorWaiting.textContent = here || !doctorWasHere ? WAITING_FOR_DOCTOR : DOCTOR_LEFT;
  doctorWaiting.hidden = here;
}

/** The proxy's notices: the consult ends soon, or the doctor left. */
function onNotice(msg) {
  if ('expires_in' in msg) expiry.show(Number(msg.expires_in));
  if (msg.left === 'doctor') {
    doctorWasHere = true;
    showDoctorPresence(false);
  }
}

/** The consult is over: camera and microphone off, no more requests, and say so (nothing to retry). */
function endConsult(reason) {
  if (mp.state === 'ended') return;
  setState('ended');
  stopPolling?.();
  stopPolling = null;
  expiry.stop();
  call?.close();
  call = null;
  localStream?.getTracks().forEach((t) => t.stop());
  localStream = null;
  doctorVideo.srcObject = null;
  selfView.srcObject = null;
  intro.hidden = true;
  callSection.hidden = true;
  leftSection.hidden = true;
  $('ended-detail').textContent = endedDetail(reason);
  endedSection.hidden = false;
  $('ended-title').focus({ preventScroll: true });
}

/** Read the link back from the server before any camera is asked for; false (and say why) if it cannot work. */
async function verifyLink() {
  const result = await checkLink(params, 'patient');
  if (result.ok) return true;
  if (result.invalid) {
    forgetLink();
    setState('invalid');
    startButton.hidden = true;
    intro.querySelectorAll('.intro-steps').forEach((el) => { el.hidden = true; }); // no camera to explain
    introError.textContent = LINK_INVALID;
  } else {
    introError.textContent = `This link could not be checked just now (${result.message}). Please try again in a moment.`;
  }
  introError.hidden = false;
  return false;
}

/** Tap the small picture to make it the large one (and back): the patient can check that their eyes show. */
function swapViews() {
  const swapped = stage.classList.toggle('swapped');
  pip.setAttribute('aria-pressed', String(swapped));
}
pip.addEventListener('click', swapViews);
doctorVideo.addEventListener('click', () => {
  if (stage.classList.contains('swapped')) swapViews();
});

startButton.addEventListener('click', async () => {
  introError.hidden = true;
  if (!mediaSupported()) {
    introError.textContent = 'This browser cannot make video calls from this page. Please open the link in an up-to-date Chrome, Safari, Firefox or Edge, and make sure the address starts with https://.';
    introError.hidden = false;
    return;
  }
  startButton.disabled = true;
  startButton.textContent = 'Starting…';
  if (!(await verifyLink())) { // again: the consult may have ended while this page stood open
    startButton.disabled = false;
    startButton.textContent = 'Start';
    return;
  }
  setState('starting');
  try {
    localStream = await getMedia();
  } catch (err) {
    introError.textContent = mediaErrorMessage(err);
    introError.hidden = false;
    startButton.disabled = false;
    startButton.textContent = 'Try again';
    setState('intro');
    return;
  }
  muteButton.disabled = localStream.getAudioTracks().length === 0;
  intro.hidden = true;
  callSection.hidden = false;
  joinCall();
});

muteButton.addEventListener('click', () => {
  const track = localStream?.getAudioTracks()[0];
  if (!track) return;
  track.enabled = !track.enabled;
  muteButton.textContent = track.enabled ? 'Mute microphone' : 'Unmute microphone';
  muteButton.classList.toggle('off', !track.enabled);
});

cameraButton.addEventListener('click', () => {
  const track = localStream?.getVideoTracks()[0];
  if (!track) return;
  track.enabled = !track.enabled; // disabled tracks send black frames; the connection stays up
  cameraButton.textContent = track.enabled ? 'Turn camera off' : 'Turn camera on';
  cameraButton.classList.toggle('off', !track.enabled);
  updateBadge();
});

retryButton.addEventListener('click', () => {
  retryButton.hidden = true;
  showCallMessage('');
  call?.start();
});

function leave() {
  stopPolling?.();
  expiry.stop();
  call?.leave(); // says goodbye first, so the doctor hears "has left" at once

  call = null;
  localStream?.getTracks().forEach((t) => t.stop());
  localStream = null;
  doctorVideo.srcObject = null;
  selfView.srcObject = null;
}

$('leave').addEventListener('click', () => {
  leave();
  callSection.hidden = true;
  leftSection.hidden = false;
});

$('rejoin').addEventListener('click', () => location.reload());

// Closing the tab: tell the server right away instead of letting ICE time out.
window.addEventListener('pagehide', () => call?.leave({ wait: false }));

countFrames(selfView, (n) => {
  mp.framesShown += n;
});

if (!params) {
  startButton.disabled = true;
  introError.textContent = 'This link is incomplete. Please open the full link you were sent by the clinic.';
  introError.hidden = false;
} else {
  // Check the link now, before the patient is asked for the camera.
  startButton.disabled = true;
  startButton.textContent = 'Checking the link…';
  verifyLink().then(() => {
    startButton.disabled = false;
    startButton.textContent = 'Start';
  });
}
