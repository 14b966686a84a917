// The task list: GET /tasks one page at a time (never all of them), filtered by status, type
// and user, with next_cursor paging. The page in view is fetched again every 2 s: one bounded
// request, however many tasks the tenant has.
import { api, qs, taskTypes } from './api.js';
import { STATUSES, ago, badge, card, every, h, mount, progressBar, shortId } from './dom.js';

const PAGE_SIZE = 25;
const POLL_MS = 2000;

/** Cursors of the pages before the one in view, for "Previous"; reset when the filters change. */
let back = { filters: '', cursors: [] };

export async function tasksPage({ root, params, signal }) {
  const filters = { status: params.get('status') ?? '', type: params.get('type') ?? '', user_id: params.get('user_id') ?? '' };
  const cursor = params.get('cursor') ?? '';
  const filterKey = qs(filters);
  if (back.filters !== filterKey) back = { filters: filterKey, cursors: [] };
  if (!cursor) back.cursors = [];

  const go = (next) => {
    location.hash = `#/tasks${qs({ ...filters, ...next })}`;
  };

  // --- filters ---
  const statusSel = h(
    'select',
    { id: 'filter-status', 'aria-label': 'Status' },
    h('option', { value: '' }, 'Any status'),
    STATUSES.map((st) => h('option', { value: st, selected: st === filters.status }, st)),
  );
  const typeSel = h('select', { id: 'filter-type', 'aria-label': 'Type' }, h('option', { value: '' }, 'Any type'));
  const userInput = h('input', { id: 'filter-user', type: 'search', placeholder: 'user_id', value: filters.user_id, 'aria-label': 'User id' });
  statusSel.addEventListener('change', () => go({ status: statusSel.value, cursor: '' }));
  typeSel.addEventListener('change', () => go({ type: typeSel.value, cursor: '' }));
  let typing;
  userInput.addEventListener('input', () => {
    clearTimeout(typing);
    typing = setTimeout(() => go({ user_id: userInput.value.trim(), cursor: '' }), 400);
  });
  const clear = h('button', { type: 'button', class: 'btn btn-ghost', disabled: !filters.status && !filters.type && !filters.user_id }, 'Clear');
  clear.addEventListener('click', () => (location.hash = '#/tasks'));

  void taskTypes().then((types) => {
    for (const t of types) typeSel.append(h('option', { value: t.name, selected: t.name === filters.type }, t.name));
    if (filters.type && !types.some((t) => t.name === filters.type)) typeSel.append(h('option', { value: filters.type, selected: true }, filters.type));
  });

  // --- table ---
  const tbody = h('tbody', {});
  const table = h(
    'table',
    { class: 'table tasks-table', id: 'tasks-table' },
    h(
      'thead',
      {},
      h(
        'tr',
        {},
        ['Status', 'Task', 'Type', 'User', 'Progress', 'Message', 'Created', 'Updated'].map((c) => h('th', {}, c)),
      ),
    ),
    tbody,
  );
  const empty = h('div', { class: 'empty', hidden: true }, 'No tasks match. ', h('a', { href: '#/submit' }, 'Submit one'), '.');

  const prev = h('button', { type: 'button', class: 'btn btn-secondary', id: 'page-prev', disabled: !cursor }, '← Previous');
  const next = h('button', { type: 'button', class: 'btn btn-secondary', id: 'page-next', disabled: true }, 'Next →');
  const pageInfo = h('span', { class: 'muted' }, '');
  prev.addEventListener('click', () => go({ cursor: back.cursors.pop() ?? '' }));
  let nextCursor = null;
  next.addEventListener('click', () => {
    if (!nextCursor) return;
    back.cursors.push(cursor);
    go({ cursor: nextCursor });
  });

  mount(
    root,
    h(
      'div',
      { class: 'toolbar' },
      statusSel,
      typeSel,
      userInput,
      clear,
      h('span', { class: 'spacer' }),
      h('a', { class: 'btn btn-primary', href: '#/submit' }, 'New task'),
    ),
    card(null, [h('div', { class: 'table-wrap' }, table), empty], { cls: 'card-flush' }),
    h('div', { class: 'pager' }, pageInfo, h('span', { class: 'spacer' }), prev, next),
  );

  const rows = new Map();
  const rowOf = (t) => {
    let r = rows.get(t.task_id);
    if (!r) {
      const bar = progressBar(t.progress, t.status);
      r = {
        tr: h('tr', { class: 'row-link', 'data-task-id': t.task_id }),
        status: h('td', {}),
        id: h('td', {}, h('a', { href: `#/tasks/${t.task_id}`, class: 'mono', title: t.task_id }, shortId(t.task_id))),
        type: h('td', { class: 'type-cell' }),
        user: h('td', { class: 'muted' }),
        bar,
        pct: h('span', { class: 'pct' }),
        message: h('td', { class: 'message' }),
        created: h('td', { class: 'nowrap' }),
        updated: h('td', { class: 'nowrap' }),
      };
      r.tr.append(r.status, r.id, r.type, r.user, h('td', { class: 'progress-cell' }, bar, r.pct), r.message, r.created, r.updated);
      r.tr.addEventListener('click', (e) => {
        if (!e.target.closest('a')) location.hash = `#/tasks/${t.task_id}`;
      });
      rows.set(t.task_id, r);
    }
    r.tr.dataset.status = t.status;
    mount(r.status, badge(t.status));
    mount(r.type, t.type, t.step ? h('span', { class: 'tag' }, t.step) : null);
    mount(r.user, t.user_id ?? '–');
    r.bar.update(t.progress, t.status);
    r.pct.textContent = `${Math.round(t.progress)}%`;
    mount(r.message, t.error ? h('span', { class: 'text-error' }, t.error.message ?? t.error.code) : (t.message ?? ''));
    mount(r.created, ago(t.created_at));
    mount(r.updated, ago(t.updated_at));
    return r;
  };

  const pageNo = !cursor ? 1 : back.cursors.length > 0 ? back.cursors.length + 1 : null;
  const refresh = async () => {
    const page = await api('GET', `/tasks${qs({ ...filters, limit: PAGE_SIZE, cursor })}`, undefined, { signal });
    if (signal.aborted) return;
    const seen = new Set();
    const ordered = page.tasks.map((t) => {
      seen.add(t.task_id);
      return rowOf(t).tr;
    });
    for (const id of [...rows.keys()]) if (!seen.has(id)) rows.delete(id);
    tbody.replaceChildren(...ordered);
    empty.hidden = page.tasks.length > 0;
    table.hidden = page.tasks.length === 0;
    nextCursor = page.next_cursor;
    next.disabled = !nextCursor;
    prev.disabled = !cursor;
    pageInfo.textContent = `${pageNo ? `Page ${pageNo} · ` : ''}${page.tasks.length} task${page.tasks.length === 1 ? '' : 's'} · refreshed every ${POLL_MS / 1000} s`;
  };
  every(POLL_MS, refresh, signal);
}
