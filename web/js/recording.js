// Recording the consult, on both pages: the patient's consent in plain words, the doctor's Record / Stop, and a
// red "Recording" bar on both pages for as long as a recording runs.
//
// The proxy decides everything (proxy/consult/recording_link.py); a page shows the status it is told
// ({"recording": status} on the data channel, and in the polled room state) and sends the person's choices as
// POST /api/rooms/{room}/recording with its own room token. The patient can always say no or withdraw, which
// stops a recording at once.

import { api } from './api.js';

const TICK_MS = 1000;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

function clock(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const mm = h ? String(m).padStart(2, '0') : String(m);
  return `${h ? `${h}:` : ''}${mm}:${String(s % 60).padStart(2, '0')}`;
}

/**
 * The recording part of a consult page. `role` is the page's ('patient' or 'doctor'); `controls` is where the
 * doctor's Record / Stop go. Feed it every status with `update(status)`.
 */
export class RecordingPanel {
  constructor({ role, room, token, controls = null }) {
    this.role = role;
    this.room = room;
    this.token = token;
    this.status = null;
    this.since = 0; // Date.now() when status.seconds was measured
    this.answered = false; // the patient answered the current question (no dialog again until asked anew)
    this.busy = false;
    this.mp = window.maskproxy || (window.maskproxy = {});
    this.mp.recording = null;

    // The red bar, at the top of the page and staying there as it scrolls, on both pages while a recording runs.
    this.barText = el('span', { class: 'recording-text' });
    this.barTime = el('span', { class: 'recording-time' });
    this.bar = el('div', { class: 'recording-bar', id: 'recording-bar', role: 'status', 'aria-live': 'polite' },
      el('span', { class: 'recording-dot', 'aria-hidden': 'true' }), el('strong', { text: 'Recording' }), this.barTime,
      this.barText);
    this.bar.hidden = true;
    this.note = el('p', { class: 'message recording-note', id: 'recording-note', role: 'status', 'aria-live': 'polite' });
    this.note.hidden = true;
    document.body.prepend(this.bar);

    if (role === 'patient') this.#patient();
    else this.#doctor(controls);
    setInterval(() => this.#tick(), TICK_MS);
  }

  /* ---------- the patient ---------- */

  #patient() {
    this.withdrawButton = el('button', { type: 'button', class: 'danger', id: 'recording-withdraw', text: 'Stop recording' });
    this.withdrawButton.addEventListener('click', () => this.#send('withdraw'));
    this.bar.append(this.withdrawButton);
    this.consentedText = el('span', { text: 'You agreed to recording: the doctor may record again. ' });
    this.revokeButton = el('button', { type: 'button', id: 'recording-revoke', text: 'Withdraw my consent' });
    this.revokeButton.addEventListener('click', () => this.#send('withdraw'));
    this.consented = el('p', { class: 'recording-consented', id: 'recording-consented' }, this.consentedText, this.revokeButton);
    this.consented.hidden = true;
    const anchor = document.getElementById('call-message') || document.body.lastElementChild;
    anchor.after(this.note, this.consented);

    this.audioBox = el('input', { type: 'checkbox', id: 'consent-audio' });
    this.audioRow = el('label', { class: 'consent-audio', for: 'consent-audio' }, this.audioBox,
      ' Also record sound: your voice and what you say. A voice can identify you, so this is your choice.');
    this.keptList = el('ul');
    this.notKeptList = el('ul');
    this.howLong = el('p');
    this.required = el('p', { text: 'This clinic records its consults for the medical record, with your agreement.' });
    this.agreeButton = el('button', { type: 'button', class: 'primary', id: 'consent-agree', text: 'Yes, record' });
    this.declineButton = el('button', { type: 'button', id: 'consent-decline', text: 'No, do not record' });
    this.dialog = el('dialog', { class: 'consent', id: 'consent-dialog', 'aria-labelledby': 'consent-title' },
      el('h2', { id: 'consent-title', text: 'May the doctor record this consult?' }),
      this.required,
      el('p', { text: 'The doctor would like to keep a recording of this consult with your medical record.' }),
      el('h3', { text: 'What is kept' }), this.keptList, this.audioRow,
      el('h3', { text: 'What is not kept' }), this.notKeptList,
      this.howLong,
      el('p', { text: 'You can stop the recording at any time with the "Stop recording" button at the top of the page. '
        + 'If you say no, the consult goes on just the same.' }),
      el('div', { class: 'controls' }, this.agreeButton, this.declineButton));
    document.body.append(this.dialog);
    this.agreeButton.addEventListener('click', () => {
      this.answered = true;
      this.dialog.close();
      this.#send('agree', { audio: this.status?.audio_allowed ? this.audioBox.checked : false });
    });
    this.declineButton.addEventListener('click', () => this.#decline());
    this.dialog.addEventListener('cancel', () => this.#decline()); // Escape: no
  }

  #decline() {
    this.answered = true;
    if (this.dialog.open) this.dialog.close();
    this.#send('withdraw');
  }

  #fillConsent(status) {
    const sound = status.audio_allowed;
    this.required.hidden = status.mode !== 'required';
    this.keptList.replaceChildren(
      el('li', { text: 'the animated face the doctor sees (not your face)' }),
      el('li', { text: 'your eye, eyelid and head movements, as numbers' }),
      el('li', { text: 'the results of eye tests and the notes the doctor makes' }));
    this.notKeptList.replaceChildren(
      el('li', { text: 'your camera picture, or anything else of your face' }),
      el('li', { text: sound ? 'sound, unless you tick the box above' : 'sound: your voice is not recorded' }));
    this.audioRow.hidden = !sound;
    this.audioBox.checked = false;
    const days = status.retention_days;
    this.howLong.textContent = `${status.encrypted ? 'The recording is stored encrypted on the clinic\'s server. ' : ''}${
      days ? `It is deleted automatically after ${days} days.` : 'The clinic keeps it with your medical record.'}`;
  }

  #showPatient(status) {
    const asking = status.state === 'asking';
    if (!asking) this.answered = false;
    if (asking && !this.answered && !this.dialog.open) {
      this.#fillConsent(status);
      this.dialog.showModal();
    } else if (!asking && this.dialog.open) {
      this.dialog.close(); // the doctor took the question back
    }
    this.barText.textContent = ` The doctor is recording this consult: the animated face and your eye movements${
      status.audio ? ', and sound' : ''}. Your camera picture is not recorded.`;
    this.consented.hidden = status.state !== 'consented';
  }

  /* ---------- the doctor ---------- */

  #doctor(controls) {
    this.recordButton = el('button', { type: 'button', id: 'record', text: 'Record' });
    this.stopButton = el('button', { type: 'button', class: 'danger', id: 'record-stop', text: 'Stop recording' });
    this.state = el('span', { class: 'hint', id: 'record-state' });
    this.group = el('div', { class: 'recording-controls', role: 'group', 'aria-label': 'Recording' },
      this.recordButton, this.stopButton, this.state);
    this.group.hidden = true;
    (controls || document.body).append(this.group);
    this.recordButton.addEventListener('click', () => this.#send(this.status?.consent ? 'start' : 'ask'));
    this.stopButton.addEventListener('click', () => this.#send('stop'));
    const anchor = document.getElementById('message') || document.body.lastElementChild;
    anchor.after(this.note);
    // The exam panel's Mark button also marks the recording (its note is read before the panel clears it).
    document.addEventListener('click', (event) => {
      if (!event.target.closest?.('#mark') || this.status?.state !== 'recording') return;
      const note = document.getElementById('mark-note')?.value.trim().slice(0, 200) || 'mark';
      this.#send('mark', { text: note }, false);
    }, true);
  }

  #showDoctor(status) {
    const { state } = status;
    this.group.hidden = state === 'off';
    const required = status.mode === 'required';
    this.recordButton.hidden = !['idle', 'consented'].includes(state);
    this.recordButton.textContent = status.consent ? 'Record' : 'Record (asks the patient)';
    this.stopButton.hidden = !(state === 'recording' && !required) && state !== 'asking';
    this.stopButton.textContent = state === 'asking' ? 'Cancel' : 'Stop recording';
    const text = {
      idle: required ? 'This clinic records every consult: ask the patient to agree.' : 'Not recording.',
      asking: 'Waiting for the patient to agree to recording…',
      consented: 'The patient agreed to recording.',
      recording: required ? 'Recording (this clinic records every consult; only the patient can stop it).'
        : 'Recording. Marks you make are kept with it.',
      finishing: 'Finishing the recording…',
    }[state] || '';
    const last = status.last && state !== 'recording'
      ? ` Last recording: ${status.last.complete ? 'complete' : 'incomplete'}, ${clock(status.last.duration_s || 0)}.` : '';
    this.state.textContent = text + last;
    this.barText.textContent = ` The patient sees this too.${status.audio ? ' Sound is recorded.' : ''}`;
  }

  /* ---------- both ---------- */

  /** A status from the data channel or the room state (newest wins; the channel is the faster). */
  update(status) {
    if (!status || typeof status !== 'object' || typeof status.state !== 'string') return;
    this.status = status;
    this.since = Date.now();
    this.mp.recording = status;
    const recording = status.state === 'recording';
    this.bar.hidden = !recording;
    document.body.classList.toggle('recording-on', recording);
    if (this.role === 'patient') this.#showPatient(status);
    else this.#showDoctor(status);
    this.#showNote(status.error ? `${status.error.replace(/^./, (c) => c.toUpperCase())}. The consult goes on.` : '');
    this.#tick();
  }

  #showNote(text) {
    this.note.textContent = text;
    this.note.hidden = !text;
  }

  #tick() {
    const s = this.status;
    if (!s || s.state !== 'recording') return;
    this.barTime.textContent = ` ${clock((s.seconds || 0) + (Date.now() - this.since) / 1000)}`;
  }

  async #send(action, extra = {}, show = true) {
    if (this.busy && show) return;
    this.busy = show;
    try {
      const body = await api(`/api/rooms/${encodeURIComponent(this.room)}/recording`,
        { method: 'POST', token: this.token, body: { action, ...extra } });
      this.update(body?.recording);
    } catch (err) {
      if (show) this.#showNote(err.message);
    } finally {
      if (show) this.busy = false;
    }
  }
}
