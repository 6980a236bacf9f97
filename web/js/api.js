// Small fetch helpers for the maskproxy JSON API.
// Every error the server reports comes back as {"error": "..."}; we surface that text.

export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.name = 'ApiError';
    this.status = status; // HTTP status, 0 when the server could not be reached
  }
}

/**
 * Call the API and return the parsed JSON body.
 * Throws ApiError with the server's message on any non-2xx answer.
 */
export async function api(path, { method = 'GET', body, apiKey, token, signal } = {}) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  // The API key (start page) or the room token (consult pages) travel in a header, never in the URL.
  const credential = apiKey || token;
  if (credential) headers.Authorization = `Bearer ${credential}`;

  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: 'no-store',
    });
  } catch (err) {
    if (err.name === 'AbortError') throw err;
    throw new ApiError('Cannot reach the server. Please check the network connection.', 0);
  }

  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null; // e.g. an HTML error page from a reverse proxy
  }
  if (!res.ok) {
    const message = (data && typeof data.error === 'string' && data.error) || `Server error (${res.status})`;
    throw new ApiError(message, res.status);
  }
  return data;
}

/** ICE servers for this room's RTCPeerConnection; an empty list if the proxy does not offer any. */
export async function getIceServers(room, token) {
  try {
    const config = await api(`/api/rooms/${encodeURIComponent(room)}/ice`, { token });
    return Array.isArray(config?.ice_servers) ? config.ice_servers : [];
  } catch {
    return [];
  }
}

const LINK_STORAGE = `maskproxy.link:${location.pathname}`; // sessionStorage: this tab only, gone when it closes

/**
 * Room id and token from the link's fragment (#room=R&token=T), or null if missing.
 * The fragment is never sent to a server; once read it is taken out of the address bar and the
 * history entry (kept in this tab's sessionStorage, so reloading the page still works).
 */
export function roomFromUrl() {
  // A link pasted into this tab later changes only the fragment, which reloads nothing: load the page afresh.
  window.addEventListener('hashchange', () => {
    if (new URLSearchParams(location.hash.slice(1)).get('token')) location.reload();
  });
  const q = new URLSearchParams(location.hash.slice(1));
  const room = q.get('room');
  const token = q.get('token');
  if (room && token) {
    try {
      sessionStorage.setItem(LINK_STORAGE, JSON.stringify({ room, token }));
    } catch {
      // storage disabled: a reload then needs the link again
    }
    history.replaceState(history.state, '', location.pathname);
    return { room, token };
  }
  try {
    const saved = JSON.parse(sessionStorage.getItem(LINK_STORAGE) || 'null');
    if (saved && typeof saved.room === 'string' && typeof saved.token === 'string') return saved;
  } catch {
    // nothing usable saved
  }
  return null;
}

/** Forget the link this tab saved (one that turned out invalid must not come back on a reload). */
export function forgetLink() {
  try {
    sessionStorage.removeItem(LINK_STORAGE);
  } catch {
    // storage disabled: nothing saved
  }
}

/** GET the room status: {role, patient: {connected}, doctor: {connected}, mask: {...}}. */
export function getRoomStatus(room, token, signal) {
  return api(`/api/rooms/${encodeURIComponent(room)}`, { token, signal });
}

/** What a patient or doctor reads when their link cannot work (wrong, expired, deleted, or the other role's). */
export const LINK_INVALID = 'This link has expired or is not valid. Please ask the clinic for a new one.';

/** A consult that has gone (404 on a room this page could read) or a token that no longer works. */
export const isGone = (err) => err instanceof ApiError && [401, 403, 404].includes(err.status);

/**
 * Check this page's link before any camera or microphone is touched: one authenticated read of the room.
 * Resolves {ok: true, state}; {ok: false, invalid: true} for a link that cannot work (unknown or ended
 * consult, wrong token, a token of the other role); {ok: false, invalid: false, message} when the server
 * could not be asked (offline, busy): then the page may try again.
 */
export async function checkLink(link, role) {
  if (!link) return { ok: false, invalid: true };
  try {
    const state = await getRoomStatus(link.room, link.token);
    if (state?.role === role) return { ok: true, state };
    return { ok: false, invalid: true };
  } catch (err) {
    if (err instanceof ApiError && err.status >= 400 && err.status < 500 && err.status !== 408 && err.status !== 429) {
      return { ok: false, invalid: true };
    }
    return { ok: false, invalid: false, message: err.message };
  }
}

/**
 * Poll the room status every `intervalMs` and hand each result (or error) to `onStatus`.
 * Stops by itself once the consult is gone (401, 403, 404: asking again cannot help).
 * Returns a function that stops polling.
 */
export function pollRoomStatus(room, token, onStatus, intervalMs = 3000) {
  let stopped = false;
  let timer = null;
  const controller = new AbortController();
  const tick = async () => {
    try {
      onStatus(await getRoomStatus(room, token, controller.signal), null);
    } catch (err) {
      if (err.name === 'AbortError') return;
      if (isGone(err)) stopped = true;
      onStatus(null, err);
    }
    if (!stopped) timer = setTimeout(tick, intervalMs);
  };
  tick();
  return () => {
    stopped = true;
    clearTimeout(timer);
    controller.abort();
  };
}
