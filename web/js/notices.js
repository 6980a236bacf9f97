// What the consult pages say when the consult ends, is about to, or the other side leaves:
// the same words on both pages, in language a patient understands.

export const ENDED_TITLE = 'The consult has ended';

/** Why it ended, from the proxy's {"ended": reason} ('gone': the consult answered 404). */
export function endedDetail(reason) {
  switch (reason) {
    case 'expired':
      return 'Its time is up: consults close after a set time.';
    case 'deleted':
      return 'The clinic has closed it.';
    case 'shutdown':
      return 'The consult server was stopped.';
    default:
      return 'It is no longer open.';
  }
}

/** The other side left (its page said goodbye, or it was not heard from for a while). */
export const leftText = (role) => (role === 'patient' ? 'The patient has left' : 'The doctor has left');

/**
 * "This consult will end in about N minutes", counted down on the page from the proxy's
 * {"expires_in": seconds} (sent once, a few minutes before the consult's maximum lifetime).
 */
export class ExpiryNotice {
  constructor(element) {
    this.element = element;
    this.endsAt = null;
    this.timer = null;
  }

  show(seconds) {
    if (!Number.isFinite(seconds) || seconds < 0) return;
    this.endsAt = Date.now() + seconds * 1000;
    clearInterval(this.timer);
    this.timer = setInterval(() => this.#render(), 5000);
    this.#render();
  }

  stop() {
    clearInterval(this.timer);
    this.timer = null;
    this.endsAt = null;
    this.element.hidden = true;
  }

  #render() {
    const left = Math.max(0, (this.endsAt - Date.now()) / 1000);
    const minutes = Math.ceil(left / 60);
    const when = left < 60 ? 'in less than a minute' : `in about ${minutes} minute${minutes === 1 ? '' : 's'}`;
    this.element.textContent = `This consult will end ${when}.`;
    this.element.hidden = false;
  }
}
