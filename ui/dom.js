// Small DOM helpers. Text always goes in as text nodes, never as HTML, and no element gets a
// `style` attribute (the page's Content-Security-Policy has no 'unsafe-inline'): sizes and
// positions are set through the CSSOM (`el.style.width = …`), which the policy allows.

/**
 * An element: `h('a', { href: '#/tasks', class: 'link', onclick: fn }, 'text', child)`.
 * Attributes that are `null`, `undefined` or `false` are left out; `true` sets an empty one.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

const SVG_NS = 'http://www.w3.org/2000/svg';

/** An SVG element, as `h`. */
export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'style') throw new Error('no style attributes: set el.style properties instead');
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replaces the children of `el`. */
export function mount(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export const TERMINAL = new Set(['done', 'failed', 'cancelled']);
export const STATUSES = ['scheduled', 'waiting', 'queued', 'running', 'done', 'failed', 'cancelled'];

/** A coloured status pill. */
export function badge(status) {
  return h('span', { class: `badge badge-${status ?? 'unknown'}`, 'data-status': status ?? '' }, status ?? '–');
}

/** A progress bar; `update(percent, status)` moves it. */
export function progressBar(percent = 0, status = 'queued', { large = false } = {}) {
  const fill = h('div', { class: 'progress-fill' });
  const bar = h('div', { class: `progress${large ? ' progress-lg' : ''}`, role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': 100 }, fill);
  bar.update = (p, st) => {
    const v = Math.max(0, Math.min(100, Number(p) || 0));
    fill.style.width = `${v}%`;
    bar.setAttribute('aria-valuenow', String(Math.round(v)));
    bar.dataset.status = st ?? '';
  };
  bar.update(percent, status);
  return bar;
}

/** "3 s ago", "5 min ago", … with the exact time as a tooltip. */
export function ago(isoTime) {
  if (!isoTime) return h('span', { class: 'muted' }, '–');
  return h('time', { datetime: isoTime, title: new Date(isoTime).toLocaleString(), class: 'ago' }, relative(isoTime));
}

export function relative(isoTime) {
  const ms = Date.now() - Date.parse(isoTime);
  const future = ms < 0;
  const sec = Math.abs(ms) / 1000;
  let text;
  if (sec < 1) return future ? 'in a moment' : 'just now';
  if (sec < 60) text = `${Math.floor(sec)} s`;
  else if (sec < 3600) text = `${Math.floor(sec / 60)} min`;
  else if (sec < 86_400) text = `${Math.floor(sec / 3600)} h`;
  else text = `${Math.floor(sec / 86_400)} d`;
  return future ? `in ${text}` : `${text} ago`;
}

/** A duration between two ISO times (or until now), e.g. "1.4 s", "2 min 5 s". */
export function duration(fromIso, toIso) {
  if (!fromIso) return '–';
  const ms = (toIso ? Date.parse(toIso) : Date.now()) - Date.parse(fromIso);
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.floor(ms / 60_000)} min ${Math.floor((ms % 60_000) / 1000)} s`;
}

export const shortId = (id) => (id ? String(id).slice(0, 8) : '–');

/** A `<pre>` of a JSON value. */
export const jsonBlock = (value) => h('pre', { class: 'code' }, JSON.stringify(value, null, 2));

/** A label/value list. */
export function details(rows) {
  return h(
    'dl',
    { class: 'details' },
    rows.filter(Boolean).map(([k, v]) => [h('dt', {}, k), h('dd', {}, v ?? h('span', { class: 'muted' }, '–'))]),
  );
}

export function card(title, body, { actions = null, id = null, cls = '' } = {}) {
  return h(
    'section',
    { class: `card ${cls}`, id },
    title || actions ? h('header', { class: 'card-head' }, h('h2', {}, title), actions ? h('div', { class: 'card-actions' }, actions) : null) : null,
    h('div', { class: 'card-body' }, body),
  );
}

export function emptyState(text) {
  return h('div', { class: 'empty' }, text);
}

let toastBox;
/** A message at the bottom right for a few seconds: kind `ok`, `error` or `info`. */
export function toast(message, kind = 'info', ms = 4000) {
  toastBox ??= document.getElementById('toasts');
  const el = h('div', { class: `toast toast-${kind}`, role: kind === 'error' ? 'alert' : 'status' }, message);
  toastBox.append(el);
  while (toastBox.children.length > 3) toastBox.firstElementChild.remove();
  setTimeout(() => el.classList.add('toast-out'), ms);
  setTimeout(() => el.remove(), ms + 400);
}

/** A button that runs `fn` once at a time, disabled meanwhile. */
export function actionButton(label, fn, { kind = 'secondary', id = null, title = null } = {}) {
  const btn = h('button', { type: 'button', class: `btn btn-${kind}`, id, title }, label);
  btn.addEventListener('click', async () => {
    if (btn.disabled) return;
    btn.disabled = true;
    btn.classList.add('busy');
    try {
      await fn();
    } finally {
      btn.classList.remove('busy');
      btn.disabled = btn.dataset.keepDisabled === 'true';
    }
  });
  return btn;
}

/** The message of an API error (`{error: {code, message}}`) or of any other. */
export function errorText(err) {
  return err?.apiMessage ?? err?.message ?? String(err);
}

/** Tells the shell whether the last refresh reached the API (the "live" dot). */
export function live(ok = true) {
  window.dispatchEvent(new CustomEvent('atq:live', { detail: ok }));
}

/**
 * Runs `fn` now and then every `ms` while the page is open, skipping ticks while the tab is
 * hidden, until `signal` aborts. One run at a time; an error marks the page offline.
 */
export function every(ms, fn, signal) {
  let timer;
  let running = false;
  let again = false;
  const tick = async () => {
    clearTimeout(timer);
    if (signal.aborted) return;
    if (running) {
      again = true;
      return;
    }
    running = true;
    if (!document.hidden) {
      try {
        await fn();
        live(true);
      } catch (err) {
        if (!signal.aborted) live(false);
        console.warn(err);
      }
    }
    running = false;
    if (signal.aborted) return;
    if (again) {
      again = false;
      void tick();
    } else timer = setTimeout(tick, ms);
  };
  signal.addEventListener('abort', () => clearTimeout(timer), { once: true });
  void tick();
  return { now: () => void tick() };
}
