// Patient page, eye tests: the full-screen dot the doctor's guided tests show, and the screen-size step.
//
// The proxy sends {"exam": {test, id, lead_s, duration_s, instruction, screen, segments}} to start a test and
// {"exam": {"test": "stop", id}} to end it (proxy/exam/targets.py). Each segment holds the dot at (yaw, pitch)
// degrees plus amp x sin(2 pi hz (s - t0)) on each axis, s in seconds from the dot's start. A target at
// (yaw, pitch) is drawn at x = W/2 - D tan(yaw), y = H/2 - D tan(pitch) on the page (CSS px), D the viewing
// distance in CSS px that the proxy worked out from this page's screen report and the face's size.
//
// The page sends back only: its screen ({"screen": {width_css_px, height_css_px, card_css_px | diagonal_in}}),
// that the dot started ({"exam_started": {id}}, so the proxy times the test from the dot, not from the
// command), and that the patient left the test ({"exam_exit": {id}}).

const $ = (id) => document.getElementById(id);
const DEG = Math.PI / 180;
const CARD_MM = 85.6; // ISO/IEC 7810 ID-1: a bank card's long side
const CSS_PX_PER_MM = 96 / 25.4; // the CSS reference pixel, the ruler's starting point
const STORE_KEY = 'maskproxy-screen'; // this tab only: a screen's size says nothing about who sits in front of it
const RESIZE_DEBOUNCE_MS = 500;

/** Position of the dot (yaw, pitch in degrees) at s seconds after its start; null outside the schedule. */
export function targetAt(segments, s) {
  for (const seg of segments) {
    if (s >= seg.t0 && s < seg.t1) {
      const phase = Math.sin(2 * Math.PI * seg.hz * (s - seg.t0));
      return { yaw: seg.yaw + seg.amp_yaw * phase, pitch: seg.pitch + seg.amp_pitch * phase };
    }
  }
  return null;
}

/**
 * The dot, full screen, and the screen-size step. `send(message)` puts a message on the data channel.
 * `onChange(state)` hears 'running' and 'idle' (the page may hide its own controls meanwhile).
 */
export class FixationTarget {
  constructor({ send, onChange } = {}) {
    this.send = send || (() => {});
    this.onChange = onChange || (() => {});
    this.overlay = $('fixation');
    this.dot = $('fixation-dot');
    this.instruction = $('fixation-instruction');
    this.exitButton = $('fixation-exit');
    this.test = null; // {id, segments, lead_s, duration_s, shownAt, dotAt}
    this.frame = null;
    this.leadTimer = null;
    this.screen = loadScreen(); // {card_css_px} or {diagonal_in (of the whole screen)}
    this.status = window.maskproxy ? (window.maskproxy.exam = { running: null, shown: 0, positions: [] }) : {};
    this.exitButton.addEventListener('click', () => this.exit());
    document.addEventListener('keydown', (event) => {
      if (event.key === 'Escape' && this.test) this.exit();
    });
    let resizeTimer = null;
    window.addEventListener('resize', () => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(() => this.reportScreen(), RESIZE_DEBOUNCE_MS);
    });
    this.#setupRuler();
  }

  /** The data channel is open: say how large the page is, so the proxy can place the targets. */
  attach(channel) {
    this.send = (message) => {
      if (channel.readyState === 'open') channel.send(JSON.stringify(message));
    };
    channel.addEventListener('open', () => this.reportScreen());
    if (channel.readyState === 'open') this.reportScreen();
  }

  /** The page's drawing area (CSS px) and its scale, from the ruler or the typed diagonal. */
  reportScreen() {
    const width = Math.round(window.innerWidth);
    const height = Math.round(window.innerHeight);
    if (width < 200 || height < 150) return; // too small for a test: the proxy keeps its defaults
    const screen = { width_css_px: width, height_css_px: height };
    if (this.screen?.card_css_px) screen.card_css_px = round1(this.screen.card_css_px);
    else if (this.screen?.diagonal_in) {
      // the typed diagonal is the whole screen's; the proxy scales the page's own size, so give it the page's
      const whole = Math.hypot(window.screen.width, window.screen.height);
      const page = this.screen.diagonal_in * Math.hypot(width, height) / whole;
      if (page >= 4 && page <= 120) screen.diagonal_in = round1(page);
    }
    this.send({ screen });
  }

  onMessage(msg) {
    const exam = msg.exam;
    if (!exam || typeof exam !== 'object' || !Number.isInteger(exam.id)) return;
    if (exam.test === 'stop') {
      if (this.test && this.test.id === exam.id) this.#end();
      return;
    }
    if (!Array.isArray(exam.segments) || !exam.screen) return;
    this.#start(exam);
  }

  /** The patient pressed "Exit the test" (or Escape). */
  exit() {
    if (!this.test) return;
    this.send({ exam_exit: { id: this.test.id } });
    this.#end();
  }

  #start(exam) {
    this.#end(false);
    const leadMs = Math.max(0, Number(exam.lead_s) || 0) * 1000;
    this.test = { ...exam, shownAt: performance.now(), dotAt: null };
    this.instruction.textContent = exam.instruction || 'Follow the dot with your eyes.';
    this.overlay.hidden = false;
    this.overlay.classList.add('waiting');
    this.dot.hidden = true;
    this.exitButton.focus({ preventScroll: true });
    this.status.running = exam.test;
    this.status.id = exam.id;
    this.onChange('running');
    this.leadTimer = setTimeout(() => {
      if (!this.test || this.test.id !== exam.id) return;
      this.test.dotAt = performance.now();
      this.overlay.classList.remove('waiting');
      this.dot.hidden = false;
      this.send({ exam_started: { id: exam.id } });
      this.#draw();
    }, leadMs);
  }

  #draw() {
    const test = this.test;
    if (!test || test.dotAt === null) return;
    const s = (performance.now() - test.dotAt) / 1000;
    const target = targetAt(test.segments, s);
    if (!target) {
      if (s >= test.duration_s) this.#end(); // the proxy's stop follows; the dot is gone already
      return;
    }
    const distance = test.screen.distance_css_px;
    const width = this.overlay.clientWidth;
    const height = this.overlay.clientHeight;
    const x = width / 2 - distance * Math.tan(target.yaw * DEG);
    const y = height / 2 - distance * Math.tan(target.pitch * DEG);
    this.dot.style.transform = `translate(${x.toFixed(1)}px, ${y.toFixed(1)}px)`;
    this.status.shown += 1;
    if (this.status.positions.length < 600) this.status.positions.push([round1(s), round1(x), round1(y)]);
    this.frame = requestAnimationFrame(() => this.#draw());
  }

  #end(notify = true) {
    clearTimeout(this.leadTimer);
    cancelAnimationFrame(this.frame);
    this.test = null;
    this.overlay.hidden = true;
    this.dot.hidden = true;
    this.status.running = null;
    if (notify) this.onChange('idle');
  }

  /* ---------- the screen-size step ---------- */

  #setupRuler() {
    const dialog = $('screen-setup');
    const bar = $('card-bar');
    const slider = $('card-slider');
    const saved = $('screen-saved');
    const show = () => {
      const px = Number(slider.value);
      bar.style.width = `${px}px`;
    };
    slider.value = String(Math.round(this.screen?.card_css_px || CARD_MM * CSS_PX_PER_MM));
    show();
    slider.addEventListener('input', show);
    const open = $('screen-open');
    open.addEventListener('click', () => {
      dialog.hidden = false;
      slider.focus();
    });
    $('screen-close').addEventListener('click', () => {
      dialog.hidden = true;
      open.focus();
    });
    const use = (screen, text) => {
      this.screen = screen;
      saveScreen(screen);
      this.reportScreen();
      saved.textContent = text;
      saved.hidden = false;
    };
    $('card-save').addEventListener('click', () => {
      use({ card_css_px: Number(slider.value) }, 'Thank you: the tests will use your screen\'s size.');
    });
    $('diagonal-form').addEventListener('submit', (event) => {
      event.preventDefault();
      const inches = Number($('diagonal').value);
      if (!(inches >= 4 && inches <= 120)) {
        saved.textContent = 'Please type the diagonal in inches, between 4 and 120.';
        saved.hidden = false;
        return;
      }
      use({ diagonal_in: inches }, 'Thank you: the tests will use your screen\'s size.');
    });
  }
}

function round1(v) {
  return Math.round(v * 10) / 10;
}

function loadScreen() {
  try {
    const value = JSON.parse(sessionStorage.getItem(STORE_KEY) || 'null');
    if (value && (Number.isFinite(value.card_css_px) || Number.isFinite(value.diagonal_in))) return value;
  } catch {
    // no storage, or not ours: start without
  }
  return null;
}

function saveScreen(screen) {
  try {
    sessionStorage.setItem(STORE_KEY, JSON.stringify(screen));
  } catch {
    // private mode: it lasts as long as the page
  }
}
