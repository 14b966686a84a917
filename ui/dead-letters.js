// Dead letters: the tenant's tasks that failed after all their attempts (GET /dead-letters,
// paged), and redrive (POST /dead-letters/redrive) of the selected ones or of all that match.
import { ApiError, api, qs } from './api.js';
import { actionButton, ago, card, emptyState, errorText, every, h, mount, shortId, toast } from './dom.js';

const PAGE_SIZE = 25;

export async function deadLettersPage({ root, params, signal }) {
  const filters = { type: params.get('type') ?? '', code: params.get('code') ?? '' };
  const cursor = params.get('cursor') ?? '';
  const go = (next) => {
    location.hash = `#/dead-letters${qs({ ...filters, ...next })}`;
  };

  const typeIn = h('input', { id: 'dl-type', type: 'search', placeholder: 'type', value: filters.type, 'aria-label': 'Type' });
  const codeIn = h('input', { id: 'dl-code', type: 'search', placeholder: 'error code', value: filters.code, 'aria-label': 'Error code' });
  for (const input of [typeIn, codeIn]) {
    input.addEventListener('change', () => go({ type: typeIn.value.trim(), code: codeIn.value.trim(), cursor: '' }));
  }

  const selected = new Set();
  const selectAll = h('input', { type: 'checkbox', 'aria-label': 'Select all on this page' });
  const tbody = h('tbody', {});
  const table = h(
    'table',
    { class: 'table', id: 'dead-letters-table' },
    h(
      'thead',
      {},
      h(
        'tr',
        {},
        h('th', { class: 'check' }, selectAll),
        ['Task', 'Type', 'Code', 'Message', 'Attempts', 'User', 'Workflow', 'Dead'].map((c) => h('th', {}, c)),
      ),
    ),
    tbody,
  );
  const listBox = h('div', { class: 'table-wrap' }, table);

  const redriveSelected = actionButton(
    'Redrive selected',
    async () => {
      if (selected.size === 0) return;
      await redrive({ task_ids: [...selected] });
    },
    { kind: 'primary', id: 'redrive-selected' },
  );
  const redriveAll = actionButton(
    'Redrive all matching',
    async () => {
      const body = { ...(filters.type ? { type: filters.type } : {}), ...(filters.code ? { code: filters.code } : {}) };
      await redrive(body);
    },
    { kind: 'secondary', id: 'redrive-all', title: 'POST /dead-letters/redrive with the type and code filters' },
  );
  const redrive = async (body) => {
    try {
      const r = await api('POST', '/dead-letters/redrive', body, { signal });
      toast(`${r.redriven} task${r.redriven === 1 ? '' : 's'} redriven`, 'ok');
      selected.clear();
      poll.now();
    } catch (err) {
      toast(errorText(err), 'error');
    }
  };
  const syncButtons = () => {
    redriveSelected.disabled = selected.size === 0;
    redriveSelected.textContent = selected.size > 0 ? `Redrive ${selected.size} selected` : 'Redrive selected';
  };

  const next = h('button', { type: 'button', class: 'btn btn-secondary', disabled: true }, 'Next →');
  const first = h('a', { class: 'btn btn-secondary', href: `#/dead-letters${qs(filters)}`, hidden: !cursor }, '← First page');
  let nextCursor = null;
  next.addEventListener('click', () => nextCursor && go({ cursor: nextCursor }));

  mount(
    root,
    h('div', { class: 'toolbar' }, typeIn, codeIn, h('span', { class: 'spacer' }), redriveSelected, redriveAll),
    card(null, listBox, { cls: 'card-flush' }),
    h(
      'div',
      { class: 'pager' },
      h('span', { class: 'muted' }, 'Tasks that failed after their last attempt, newest first.'),
      h('span', { class: 'spacer' }),
      first,
      next,
    ),
  );
  syncButtons();

  let current = [];
  selectAll.addEventListener('change', () => {
    for (const d of current) if (selectAll.checked) selected.add(d.task_id);
    if (!selectAll.checked) selected.clear();
    render();
  });

  const render = () => {
    syncButtons();
    if (current.length === 0) {
      mount(listBox, emptyState('No dead letters. Tasks that fail after their last attempt show here.'));
      return;
    }
    if (!listBox.contains(table)) mount(listBox, table);
    selectAll.checked = current.every((d) => selected.has(d.task_id));
    tbody.replaceChildren(
      ...current.map((d) => {
        const box = h('input', { type: 'checkbox', checked: selected.has(d.task_id), 'aria-label': `Select ${d.task_id}` });
        box.addEventListener('change', () => {
          if (box.checked) selected.add(d.task_id);
          else selected.delete(d.task_id);
          syncButtons();
        });
        return h(
          'tr',
          { 'data-task-id': d.task_id },
          h('td', { class: 'check' }, box),
          h('td', {}, h('a', { href: `#/tasks/${d.task_id}`, class: 'mono' }, shortId(d.task_id))),
          h('td', {}, d.type),
          h('td', {}, h('span', { class: 'tag tag-error' }, d.code)),
          h('td', { class: 'message' }, d.message ?? ''),
          h('td', {}, d.attempts ?? d.attempt ?? '–'),
          h('td', { class: 'muted' }, d.user_id ?? '–'),
          h('td', {}, d.workflow_id ? h('a', { href: `#/workflows/${encodeURIComponent(d.workflow_id)}`, class: 'mono' }, shortId(d.workflow_id)) : '–'),
          h('td', { class: 'nowrap' }, ago(d.dead_at)),
        );
      }),
    );
  };

  const poll = every(
    3000,
    async () => {
      let page;
      try {
        page = await api('GET', `/dead-letters${qs({ ...filters, limit: PAGE_SIZE, cursor })}`, undefined, { signal });
      } catch (err) {
        if (err instanceof ApiError && err.status === 404) {
          mount(listBox, emptyState('This server has no dead-letter routes.'));
          return;
        }
        throw err;
      }
      current = page.dead_letters ?? [];
      const ids = new Set(current.map((d) => d.task_id));
      for (const id of selected) if (!ids.has(id)) selected.delete(id);
      nextCursor = page.next_cursor ?? null;
      next.disabled = !nextCursor;
      render();
    },
    signal,
  );
}
