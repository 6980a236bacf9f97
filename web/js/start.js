// Start page for clinic staff: create a consult, hand out its two links, and keep an eye on the consults
// this browser created (waiting, in progress, ended), with a way to end one.

import { api, isGone } from './api.js';

const KEY_STORAGE = 'maskproxy.apiKey'; // sessionStorage only: gone when the tab closes
// localStorage: the consults this browser created, with their links, so that staff can find them again.
// Kept a day at most (a consult lives 4 hours by default); nothing else of them is stored.
const CONSULTS_STORAGE = 'maskproxy.consults';
const KEEP_MS = 24 * 3600 * 1000;
const REFRESH_MS = 10000;

const $ = (id) => document.getElementById(id);
const form = $('create-form');
const keyInput = $('api-key');
const createButton = $('create');
const errorBox = $('error');
const links = $('links');
const linksTitle = $('links-title');
const copyStatus = $('copy-status');
const consultsSection = $('consults');
const consultList = $('consult-list');
const listStatus = $('consults-status');

const STATES = {
  waiting: { badge: 'connecting', text: 'Waiting' },
  'in-progress': { badge: 'connected', text: 'In progress' },
  ended: { badge: 'ended', text: 'Ended' },
  unknown: { badge: 'unknown', text: 'Unknown' },
};
const states = new Map(); // room -> {state, detail}: what the server last said about it
let refreshTimer = null;

keyInput.value = sessionStorage.getItem(KEY_STORAGE) || '';

function showError(text) {
  errorBox.textContent = text;
  errorBox.hidden = !text;
}

/** The server refused the key (401 missing or malformed, 403 wrong): forget the saved one and say so. */
function wrongKey() {
  showError('Wrong API key. Please check it and try again.');
  sessionStorage.removeItem(KEY_STORAGE);
  keyInput.focus();
  keyInput.select();
}

/* ---------- this browser's consults ---------- */

function loadConsults() {
  try {
    const list = JSON.parse(localStorage.getItem(CONSULTS_STORAGE) || '[]');
    if (!Array.isArray(list)) return [];
    return list.filter((c) => c && typeof c.room === 'string' && typeof c.doctor_url === 'string'
      && typeof c.patient_url === 'string' && Number.isFinite(c.created) && c.created > Date.now() - KEEP_MS);
  } catch {
    return [];
  }
}

function saveConsults(list) {
  try {
    localStorage.setItem(CONSULTS_STORAGE, JSON.stringify(list));
  } catch {
    // storage full or disabled: the list lasts as long as this page
  }
}

let consults = loadConsults();
saveConsults(consults); // drops the ones older than a day

/** The doctor token from a doctor link's fragment: it reads the consult's state (who is connected). */
function doctorToken(consult) {
  return new URLSearchParams(new URL(consult.doctor_url).hash.slice(1)).get('token');
}

async function readState(consult) {
  try {
    const state = await api(`/api/rooms/${encodeURIComponent(consult.room)}`, { token: doctorToken(consult) });
    const patient = Boolean(state?.patient?.connected);
    const doctor = Boolean(state?.doctor?.connected);
    if (patient && doctor) return { state: 'in-progress', detail: 'the patient and the doctor are connected' };
    if (patient) return { state: 'waiting', detail: 'the patient is waiting for the doctor' };
    if (doctor) return { state: 'waiting', detail: 'the doctor is waiting for the patient' };
    return { state: 'waiting', detail: 'nobody has joined yet' };
  } catch (err) {
    if (isGone(err)) return { state: 'ended', detail: 'ended or expired' };
    return { state: 'unknown', detail: `could not be checked (${err.message})` };
  }
}

function schedule() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(refresh, REFRESH_MS);
}

/** Ask the server about every consult not known to have ended (while this tab is in view), then show the list. */
async function refresh() {
  clearTimeout(refreshTimer);
  const open = consults.filter((c) => states.get(c.room)?.state !== 'ended');
  if (!document.hidden) {
    const results = await Promise.all(open.map(readState));
    open.forEach((c, i) => states.set(c.room, results[i]));
    render();
  }
  if (consults.some((c) => states.get(c.room)?.state !== 'ended')) schedule();
}
document.addEventListener('visibilitychange', () => {
  if (!document.hidden && consults.length) refresh();
});

const timeOf = (ms) => new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });

function button(text, action, room, extraClass) {
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = text;
  b.dataset.action = action;
  b.dataset.room = room;
  if (extraClass) b.className = extraClass;
  return b;
}

function render() {
  consultsSection.hidden = consults.length === 0;
  const items = [...consults].sort((a, b) => b.created - a.created).map((c) => {
    const { state, detail } = states.get(c.room) || { state: 'unknown', detail: 'checking…' };
    const li = document.createElement('li');
    li.dataset.room = c.room;
    li.dataset.state = state;
    const name = document.createElement('span');
    name.className = 'consult-name';
    name.textContent = `Consult of ${timeOf(c.created)}`;
    const badge = document.createElement('span');
    badge.className = 'badge';
    badge.dataset.state = STATES[state].badge;
    badge.textContent = STATES[state].text;
    const note = document.createElement('span');
    note.className = 'consult-detail';
    note.textContent = detail;
    const actions = document.createElement('span');
    actions.className = 'consult-actions';
    if (state === 'ended') {
      actions.append(button('Remove from list', 'remove', c.room));
    } else {
      actions.append(button('Show links', 'show', c.room), button('End consult', 'end', c.room, 'danger'));
    }
    li.append(name, badge, note, actions);
    return li;
  });
  consultList.replaceChildren(...items);
}

function remember(room) {
  consults = [...consults.filter((c) => c.room !== room.room),
    { room: room.room, created: Date.now(), patient_url: room.patient_url, doctor_url: room.doctor_url }];
  saveConsults(consults);
  states.set(room.room, { state: 'waiting', detail: 'nobody has joined yet' });
  render();
  schedule();
}

function showLinks(consult, title) {
  for (const role of ['patient', 'doctor']) {
    $(`${role}-url`).value = consult[`${role}_url`];
    $(`${role}-open`).href = consult[`${role}_url`];
  }
  linksTitle.textContent = title;
  copyStatus.textContent = '';
  links.hidden = false;
  links.scrollIntoView({ behavior: 'smooth', block: 'start' });
  linksTitle.focus({ preventScroll: true });
}

async function endConsult(consult) {
  const apiKey = keyInput.value.trim();
  listStatus.textContent = '';
  if (!apiKey) {
    showError('Please enter the clinic API key to end a consult.');
    keyInput.focus();
    return;
  }
  if (!window.confirm(`End the consult of ${timeOf(consult.created)}? The patient and the doctor are disconnected.`)) return;
  try {
    await api(`/api/rooms/${encodeURIComponent(consult.room)}`, { method: 'DELETE', apiKey });
    sessionStorage.setItem(KEY_STORAGE, apiKey);
    states.set(consult.room, { state: 'ended', detail: 'ended from this page' });
    listStatus.textContent = `The consult of ${timeOf(consult.created)} has ended.`;
  } catch (err) {
    if (err.status === 404) states.set(consult.room, { state: 'ended', detail: 'ended or expired' });
    else if (err.status === 401 || err.status === 403) wrongKey();
    else listStatus.textContent = `Could not end the consult: ${err.message}`;
  }
  render();
}

consultList.addEventListener('click', (event) => {
  const target = event.target.closest('button[data-action]');
  const consult = target && consults.find((c) => c.room === target.dataset.room);
  if (!consult) return;
  if (target.dataset.action === 'show') showLinks(consult, `Consult of ${timeOf(consult.created)}`);
  else if (target.dataset.action === 'end') endConsult(consult);
  else if (target.dataset.action === 'remove') {
    consults = consults.filter((c) => c !== consult);
    states.delete(consult.room);
    saveConsults(consults);
    render();
  }
});

/* ---------- creating a consult ---------- */

form.addEventListener('submit', async (event) => {
  event.preventDefault();
  const apiKey = keyInput.value.trim();
  showError('');
  if (!apiKey) {
    showError('Please enter the clinic API key.');
    keyInput.focus();
    return;
  }
  sessionStorage.setItem(KEY_STORAGE, apiKey);
  createButton.disabled = true;
  createButton.textContent = 'Creating…';
  try {
    const room = await api('/api/rooms', { method: 'POST', apiKey });
    remember(room);
    showLinks(room, 'Consult created');
  } catch (err) {
    links.hidden = true;
    if (err.status === 401 || err.status === 403) wrongKey();
    else showError(`Could not create the consult: ${err.message}`);
  } finally {
    createButton.disabled = false;
    createButton.textContent = 'Create consult';
  }
});

$('forget-key').addEventListener('click', () => {
  sessionStorage.removeItem(KEY_STORAGE);
  keyInput.value = '';
  showError('');
  keyInput.focus();
});

async function copyText(input) {
  try {
    await navigator.clipboard.writeText(input.value);
  } catch {
    // Clipboard API needs https or permission; fall back to the old way.
    input.select();
    if (!document.execCommand('copy')) throw new Error('copy failed');
  }
}

links.addEventListener('click', async (event) => {
  const copy = event.target.closest('button[data-copy]');
  if (!copy) return;
  const input = $(copy.dataset.copy);
  const who = copy.dataset.copy.startsWith('patient') ? 'Patient' : 'Doctor';
  try {
    await copyText(input);
    copyStatus.textContent = `${who} link copied.`;
  } catch {
    input.select();
    copyStatus.textContent = 'Could not copy automatically. The link is selected: press Ctrl+C (or long-press and Copy).';
  }
});

render();
if (consults.length) refresh();
