// Shared WebRTC plumbing: peer connection creation, non-trickle offer/answer
// with the proxy, the "mask" data channel, and automatic reconnection.

import { api, ApiError, getIceServers } from './api.js';

const ICE_GATHER_TIMEOUT_MS = 2000;
const DISCONNECT_GRACE_MS = 5000; // 'disconnected' often heals by itself; wait before rejoining
const MAX_RETRIES = 5;
const BASE_BACKOFF_MS = 1000;

/** Resolve once ICE gathering is complete, or after `timeoutMs` (we then send what we have). */
function iceGatheringDone(pc, timeoutMs) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const finish = () => {
      clearTimeout(timer);
      pc.removeEventListener('icegatheringstatechange', check);
      resolve();
    };
    const check = () => {
      if (pc.iceGatheringState === 'complete') finish();
    };
    const timer = setTimeout(finish, timeoutMs);
    pc.addEventListener('icegatheringstatechange', check);
  });
}

/**
 * Non-trickle negotiation: the proxy gets one offer with all ICE candidates in it
 * and answers with a complete SDP. The offer says which page sends it (`role`); the
 * proxy refuses a token of the other role (403), and an answer that does not confirm
 * this page's role is never applied, so no media flows to a proxy that took this page
 * for the other one (the patient's camera is then never sent).
 */
export async function negotiate(pc, room, token, role) {
  await pc.setLocalDescription(await pc.createOffer());
  await iceGatheringDone(pc, ICE_GATHER_TIMEOUT_MS);
  const answer = await api(`/api/rooms/${encodeURIComponent(room)}/offer`, {
    method: 'POST',
    body: { token, role, sdp: pc.localDescription.sdp, type: 'offer' },
  });
  if (pc.signalingState === 'closed') return;
  if (answer?.role !== role) {
    pc.close();
    throw new ApiError(`the proxy did not answer as the ${role}'s page; not connecting`, 403);
  }
  await pc.setRemoteDescription({ type: 'answer', sdp: answer.sdp });
}

/**
 * Create the "mask" data channel (must happen before the offer) and dispatch its
 * JSON messages: stats messages ({"stats": {...}}) go to onStats, the eye
 * examination's ({"exam": ...}, {"exam_result": ...}, ...) to onExam, the rest are
 * per-frame mask parameters and go to onFrame. {"replaced": true} means this
 * role was opened again elsewhere (another tab): the peer connection gets a
 * "maskproxy-replaced" event, which makes its Call stop instead of reconnecting.
 * The proxy's notices about the consult itself ({"ended": reason}, {"expires_in": s},
 * {"left": role}) go to the Call as a "maskproxy-notice" event, and the channel is
 * announced as "maskproxy-channel" so that the Call can say goodbye on it.
 */
export function openMaskChannel(pc, { onFrame, onStats, onExam, onRecording }) {
  const channel = pc.createDataChannel('mask');
  pc.dispatchEvent(new CustomEvent('maskproxy-channel', { detail: channel }));
  channel.addEventListener('message', (event) => {
    if (typeof event.data !== 'string') return;
    let msg;
    try {
      msg = JSON.parse(event.data);
    } catch {
      return; // ignore anything that is not JSON
    }
    if (!msg || typeof msg !== 'object') return;
    if ('ended' in msg || 'expires_in' in msg || 'left' in msg) {
      pc.dispatchEvent(new CustomEvent('maskproxy-notice', { detail: msg }));
      return;
    }
    if (msg.replaced === true) pc.dispatchEvent(new Event('maskproxy-replaced'));
    else if ('stats' in msg) onStats?.(msg.stats);
    else if (Object.keys(msg).some((key) => key.startsWith('exam'))) onExam?.(msg);
    else if ('recording' in msg) onRecording?.(msg.recording);
    else onFrame?.(msg);
  });
  return channel;
}

/** Client errors (bad token, unknown room) will not get better by retrying. */
function isFatal(err) {
  return err instanceof ApiError && err.status >= 400 && err.status < 500 && err.status !== 408 && err.status !== 429;
}

/**
 * One participant's connection to a room, rebuilt automatically when it breaks.
 * `role` is the page's own role ('patient' or 'doctor'), never taken from the link.
 *
 * `setup(pc)` is called for every new RTCPeerConnection and must add the
 * transceivers (in the fixed order the server expects) and the data channel.
 * `onState(state, detail)` receives: 'connecting', 'connected',
 * 'disconnected' (brief network trouble; may heal by itself),
 * 'reconnecting' ({attempt, max, delayMs}), 'failed' ({message}), 'closed',
 * and 'ended' ({reason}: the consult is over — deleted, expired — and nothing reconnects).
 * `onNotice(msg)` receives the proxy's other notices: {"expires_in": s}, {"left": role}.
 */
export class Call {
  constructor({ room, token, role, setup, onState, onNotice }) {
    this.room = room;
    this.token = token;
    this.role = role; // 'patient' or 'doctor': the page, sent with every offer
    this.setup = setup;
    this.onState = onState || (() => {});
    this.onNotice = onNotice || (() => {});
    this.channel = null; // the current connection's "mask" data channel
    this.pc = null;
    this.state = 'new';
    this.attempt = 0;
    this.closed = false;
    this.retryTimer = null;
    this.graceTimer = null;
  }

  start() {
    this.closed = false;
    this.attempt = 0;
    this.#setState('connecting');
    this.#connect();
  }

  /**
   * Leave for good, saying so first ({"leaving": true} on the data channel), so that the other side
   * hears "has left" at once. With `wait`, gives the goodbye up to 500 ms to go out before closing.
   */
  async leave({ wait = true } = {}) {
    const channel = this.channel;
    if (!this.closed && channel?.readyState === 'open') {
      try {
        channel.send(JSON.stringify({ leaving: true }));
        const deadline = Date.now() + 500;
        while (wait && channel.bufferedAmount > 0 && Date.now() < deadline) {
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
      } catch {
        // the channel closed under us: closing is all that is left
      }
    }
    this.close();
  }

  /** Leave for good: close the peer connection and stop reconnecting. */
  close() {
    this.closed = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.graceTimer);
    this.#dropPc();
    this.#setState('closed');
  }

  #setState(state, detail = {}) {
    this.state = state;
    this.onState(state, detail);
  }

  /** The consult is over (the proxy said so, or it answers 404): stop for good, never reconnect. */
  #end(reason) {
    if (this.state === 'ended') return;
    this.closed = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.graceTimer);
    this.#dropPc();
    this.#setState('ended', { reason });
  }

  #dropPc() {
    if (this.pc) {
      const old = this.pc;
      this.pc = null; // event handlers check identity, so stale events are ignored
      this.channel = null;
      old.close();
    }
  }

  async #connect() {
    if (this.closed) return;
    this.#dropPc();
    // Fetch the ICE config each time: TURN credentials may be short-lived.
    const iceServers = await getIceServers(this.room, this.token);
    if (this.closed) return;
    const pc = new RTCPeerConnection({ iceServers });
    this.pc = pc;
    pc.addEventListener('connectionstatechange', () => this.#onPcState(pc));
    pc.addEventListener('maskproxy-channel', (event) => {
      if (pc === this.pc) this.channel = event.detail;
    });
    pc.addEventListener('maskproxy-notice', (event) => {
      if (pc !== this.pc || this.closed) return;
      const msg = event.detail;
      if ('ended' in msg) this.#end(String(msg.ended));
      else this.onNotice(msg);
    });
    pc.addEventListener('maskproxy-replaced', () => {
      if (pc !== this.pc || this.closed) return;
      this.closed = true; // another tab has this consult now: do not take it back
      clearTimeout(this.retryTimer);
      clearTimeout(this.graceTimer);
      this.#dropPc();
      this.#setState('failed', { message: 'this consult was opened in another tab or window.', replaced: true });
    });
    try {
      this.setup(pc);
      await negotiate(pc, this.room, this.token, this.role);
    } catch (err) {
      if (pc !== this.pc || this.closed) return;
      if (err instanceof ApiError && err.status === 404) {
        this.#end('gone'); // the link was checked when the page loaded: a consult that answers 404 has ended
      } else if (isFatal(err)) {
        this.#dropPc();
        this.#setState('failed', { message: err.message });
      } else {
        this.#retry(err.message);
      }
    }
  }

  #onPcState(pc) {
    if (pc !== this.pc || this.closed) return;
    switch (pc.connectionState) {
      case 'connected':
        this.attempt = 0;
        clearTimeout(this.graceTimer);
        this.#setState('connected');
        break;
      case 'disconnected':
        this.#setState('disconnected');
        clearTimeout(this.graceTimer);
        this.graceTimer = setTimeout(() => {
          if (pc === this.pc && pc.connectionState === 'disconnected') this.#retry('Connection lost.');
        }, DISCONNECT_GRACE_MS);
        break;
      case 'failed':
        clearTimeout(this.graceTimer);
        this.#retry('Connection failed.');
        break;
      default:
        break;
    }
  }

  #retry(message) {
    if (this.closed) return;
    this.#dropPc();
    if (this.attempt >= MAX_RETRIES) {
      this.#setState('failed', { message: `${message} Gave up after ${MAX_RETRIES} tries.` });
      return;
    }
    this.attempt += 1;
    const delayMs = BASE_BACKOFF_MS * 2 ** (this.attempt - 1);
    this.#setState('reconnecting', { attempt: this.attempt, max: MAX_RETRIES, delayMs, message });
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.#connect(), delayMs);
  }
}

/**
 * Start playing a remote stream with sound. Browsers may block audible autoplay
 * without a user gesture; then we play muted (so the picture still shows) and
 * call `onSoundBlocked(unmute)` so the page can offer a "Turn on sound" button.
 */
export async function playWithSound(video, onSoundBlocked) {
  video.muted = false;
  try {
    await video.play();
  } catch (err) {
    if (err.name !== 'NotAllowedError') return; // e.g. AbortError when srcObject changes
    video.muted = true;
    video.play().catch(() => {});
    onSoundBlocked?.(async () => {
      video.muted = false;
      await video.play().catch(() => {});
    });
  }
}

/**
 * Count frames actually presented by a <video> (for tests and diagnostics): `onFrames(n, meta)` gets the
 * number of frames presented since the last call. A busy page runs its video-frame callbacks less often
 * than frames are shown (one callback may stand for several frames), so the count comes from
 * `meta.presentedFrames`, not from the number of callbacks; it restarts when the video gets a new source.
 */
export function countFrames(video, onFrames) {
  if (!('requestVideoFrameCallback' in HTMLVideoElement.prototype)) return;
  let last = null;
  const step = (now, meta) => {
    const presented = meta.presentedFrames;
    let n = 1;
    if (Number.isFinite(presented)) {
      n = last === null || presented < last ? 1 : presented - last;
      last = presented;
    }
    if (n > 0) onFrames(n, meta);
    video.requestVideoFrameCallback(step);
  };
  video.requestVideoFrameCallback(step);
}

/** Plain-language text for getUserMedia errors. */
export function mediaErrorMessage(err) {
  switch (err?.name) {
    case 'NotAllowedError':
    case 'SecurityError':
      return 'Access to the camera or microphone was refused. Please allow it in your browser (usually the camera icon in the address bar) and try again.';
    case 'NotFoundError':
    case 'OverconstrainedError':
      return 'No camera or microphone was found on this device.';
    case 'NotReadableError':
    case 'AbortError':
      return 'The camera or microphone is being used by another app. Close that app and try again.';
    default:
      return `The camera could not be started (${err?.message || err}).`;
  }
}

/** True if this browser can do a video call at all (needs https and WebRTC). */
export function mediaSupported() {
  return Boolean(window.isSecureContext && navigator.mediaDevices?.getUserMedia && window.RTCPeerConnection);
}
