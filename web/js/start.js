// Start page for clinic staff: create a room and hand out the two links.

import { api } from './api.js';

const KEY_STORAGE = 'maskproxy.apiKey'; // sessionStorage only: gone when the tab closes

const form = document.getElementById('create-form');
const keyInput = document.getElementById('api-key');
const createButton = document.getElementById('create');
const errorBox = document.getElementById('error');
const links = document.getElementById('links');
const copyStatus = document.getElementById('copy-status');

keyInput.value = sessionStorage.getItem(KEY_STORAGE) || '';

function showError(text) {
  errorBox.textContent = text;
  errorBox.hidden = !text;
}

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
    for (const role of ['patient', 'doctor']) {
      document.getElementById(`${role}-url`).value = room[`${role}_url`];
      document.getElementById(`${role}-open`).href = room[`${role}_url`];
    }
    copyStatus.textContent = '';
    links.hidden = false;
    links.scrollIntoView({ behavior: 'smooth', block: 'start' });
    document.getElementById('links-title').focus({ preventScroll: true });
  } catch (err) {
    links.hidden = true;
    if (err.status === 401) {
      showError('Wrong API key. Please check it and try again.');
      sessionStorage.removeItem(KEY_STORAGE);
      keyInput.select();
    } else {
      showError(`Could not create the consult: ${err.message}`);
    }
  } finally {
    createButton.disabled = false;
    createButton.textContent = 'Create consult';
  }
});

document.getElementById('forget-key').addEventListener('click', () => {
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
  const button = event.target.closest('button[data-copy]');
  if (!button) return;
  const input = document.getElementById(button.dataset.copy);
  const who = button.dataset.copy.startsWith('patient') ? 'Patient' : 'Doctor';
  try {
    await copyText(input);
    copyStatus.textContent = `${who} link copied.`;
  } catch {
    input.select();
    copyStatus.textContent = 'Could not copy automatically. The link is selected: press Ctrl+C (or long-press and Copy).';
  }
});
