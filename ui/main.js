// The dashboard's shell: hash routes, the API key dialog, the live indicator.
import { askAgain, getKey, keyDismissed, onKeyChange, setKey, setKeyPrompt } from './api.js';
import { h, mount } from './dom.js';
import { deadLettersPage } from './dead-letters.js';
import { statsPage } from './stats.js';
import { submitPage } from './submit.js';
import { taskPage } from './task.js';
import { tasksPage } from './tasks.js';
import { workflowPage, workflowsPage } from './workflows.js';

const view = document.getElementById('view');
const title = document.getElementById('title');

// --- the API key ------------------------------------------------------------------------------
const dialog = document.getElementById('key-dialog');
const keyInput = document.getElementById('key-input');
let settleKey = null;

setKeyPrompt(
  (reason) =>
    new Promise((resolve) => {
      settleKey = resolve;
      document.getElementById('key-reason').textContent = `${reason} Enter an API key with the scopes tasks:read and tasks:write.`;
      keyInput.value = '';
      if (!dialog.open) dialog.showModal();
      keyInput.focus();
    }),
);

function closeKeyDialog(key) {
  if (dialog.open) dialog.close();
  const settle = settleKey;
  settleKey = null;
  if (key) setKey(key);
  settle?.(key || null);
  queueMicrotask(showKeyButton);
}

document.getElementById('key-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const key = keyInput.value.trim();
  if (key) closeKeyDialog(key);
});
document.getElementById('key-cancel').addEventListener('click', () => closeKeyDialog(null));
dialog.addEventListener('cancel', (e) => {
  e.preventDefault();
  closeKeyDialog(null);
});

const keyButton = document.getElementById('key-button');
// "Change key" once a key is in use; "Enter key" after the dialog was dismissed.
const showKeyButton = () => {
  keyButton.hidden = !getKey() && !keyDismissed();
  keyButton.textContent = getKey() ? 'Change key' : 'Enter key';
};
keyButton.addEventListener('click', () => {
  setKey(null);
  askAgain();
  route();
});
onKeyChange(showKeyButton);
showKeyButton();

// --- live indicator ---------------------------------------------------------------------------
const live = document.getElementById('live');
/** Pages call this after each successful refresh or event: the dot pulses; it greys after 10 s of silence. */
let liveTimer;
function markLive(ok = true) {
  live.classList.toggle('live-ok', ok);
  live.classList.toggle('live-down', !ok);
  live.textContent = ok ? 'live' : 'offline';
  clearTimeout(liveTimer);
  liveTimer = setTimeout(() => live.classList.remove('live-ok'), 10_000);
}
window.addEventListener('atq:live', (e) => markLive(e.detail !== false));
window.addEventListener('atq:tenant', (e) => {
  document.getElementById('tenant').textContent = e.detail ? `tenant ${e.detail}` : '';
});

// --- routes -----------------------------------------------------------------------------------
const routes = [
  [/^\/tasks\/([0-9a-f-]{36})$/i, (m) => ['Task', 'tasks', (ctx) => taskPage(ctx, m[1])]],
  [/^\/tasks$/, () => ['Tasks', 'tasks', tasksPage]],
  [/^\/submit$/, () => ['New task', 'submit', submitPage]],
  [/^\/workflows\/([^/]+)$/, (m) => ['Workflow', 'workflows', (ctx) => workflowPage(ctx, decodeURIComponent(m[1]))]],
  [/^\/workflows$/, () => ['Workflows', 'workflows', workflowsPage]],
  [/^\/dead-letters$/, () => ['Dead letters', 'dead-letters', deadLettersPage]],
  [/^\/stats$/, () => ['Queues & workers', 'stats', statsPage]],
];

let current = null;

function route() {
  const hash = location.hash.replace(/^#/, '') || '/tasks';
  const [path, search = ''] = hash.split('?');
  current?.abort();
  const ac = new AbortController();
  current = ac;
  for (const [re, make] of routes) {
    const m = path.match(re);
    if (!m) continue;
    const [name, section, page] = make(m);
    title.textContent = name;
    document.title = `${name} · Agent task queue`;
    for (const a of document.querySelectorAll('.nav a')) a.classList.toggle('active', a.dataset.section === section);
    const root = h('div', { class: 'page', 'data-page': section });
    mount(view, root);
    const params = new URLSearchParams(search);
    Promise.resolve(page({ root, params, signal: ac.signal, setTitle: (t) => (title.textContent = t) })).catch((err) => {
      if (!ac.signal.aborted) mount(root, h('div', { class: 'error-box' }, String(err?.message ?? err)));
    });
    return;
  }
  location.hash = '#/tasks';
}

window.addEventListener('hashchange', route);
route();
