// Patient page: send camera + microphone to the proxy, show the doctor and the
// MASKED self-view the proxy sends back. The raw camera is never shown here,
// so the patient sees exactly what the doctor sees.

import { roomFromUrl, pollRoomStatus } from './api.js';
import { Call, openMaskChannel, playWithSound, countFrames, mediaErrorMessage, mediaSupported } from './rtc.js';
import { FixationTarget } from './fixation.js';

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

const FACE_STALE_MS = 2000; // no per-frame message for this long: treat as "no face"

// Exposed for automated tests.
const mp = (window.maskproxy = { framesShown: 0, state: 'intro', face: false, lastParams: null });

const params = roomFromUrl();
let localStream = null;
let call = null;
let stopPolling = null;
let lastFrameAt = 0;
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
        ? 'This consult is now open in another tab or window. Use the button below to bring it back here.'
        : `Could not connect: ${detail.message}`);
      break;
    default:
      break;
  }
}

function joinCall() {
  mp.face = false;
  call = new Call({ room: params.room, token: params.token, role: 'patient', setup: setupPeer, onState: onCallState });
  call.start();
  stopPolling = pollRoomStatus(params.room, params.token, (status) => {
    if (status) doctorWaiting.hidden = Boolean(status.doctor?.connected);
  });
}

startButton.addEventListener('click', async () => {
  introError.hidden = true;
  if (!mediaSupported()) {
    introError.textContent = 'This browser cannot make video calls from this page. Please open the link in an up-to-date Chrome, Safari, Firefox or Edge, and make sure the address starts with https://.';
    introError.hidden = false;
    return;
  }
  startButton.disabled = true;
  startButton.textContent = 'Starting…';
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
  call?.close();
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
window.addEventListener('pagehide', () => call?.close());

countFrames(selfView, (n) => {
  mp.framesShown += n;
});

if (!params) {
  startButton.disabled = true;
  introError.textContent = 'This link is incomplete. Please open the full link you were sent by the clinic.';
  introError.hidden = false;
}
