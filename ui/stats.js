// Queue statistics and workers: GET /stats every 3 s (the tenant's task counts, the request
// backlog per priority, the live workers).
import { api } from './api.js';
import { STATUSES, ago, card, emptyState, every, h, mount } from './dom.js';

export async function statsPage({ root, signal }) {
  const counts = h('div', { class: 'stat-grid', id: 'stat-counts' });
  const backlog = h('div', { class: 'stat-grid stat-grid-3', id: 'stat-backlog' });
  const types = h('div', { id: 'stat-types' });
  const workers = h('div', { id: 'stat-workers' });
  const note = h('p', { class: 'muted small' });
  mount(
    root,
    card('Tasks by status', [counts, note]),
    h('div', { class: 'grid-2' }, card('Backlog (request messages not yet consumed)', backlog), card('Tasks by type', types)),
    card('Workers', workers, { cls: 'card-flush' }),
  );

  const stat = (label, value, cls = '', href = null) =>
    h(
      href ? 'a' : 'div',
      { class: `stat ${cls}`, href, 'data-stat': label },
      h('div', { class: 'stat-value' }, value),
      h('div', { class: 'stat-label' }, label),
    );

  every(
    3000,
    async () => {
      const st = await api('GET', '/stats', undefined, { signal });
      window.dispatchEvent(new CustomEvent('atq:tenant', { detail: st.tenant }));
      const by = st.tasks?.by_status ?? {};
      const known = [...STATUSES, ...Object.keys(by).filter((k) => !STATUSES.includes(k))];
      mount(
        counts,
        known.map((k) => stat(k, (by[k] ?? 0).toLocaleString(), `stat-${k}`, `#/tasks?status=${k}`)),
      );
      note.textContent = st.tasks?.truncated
        ? `Counted over the newest ${st.tasks.scanned.toLocaleString()} tasks (the scan budget); older ones are not in these numbers.`
        : `${(st.tasks?.scanned ?? 0).toLocaleString()} live tasks of tenant ${st.tenant} (finished ones count until they expire).`;

      mount(
        backlog,
        ['high', 'normal', 'low'].map((p) =>
          stat(p, st.backlog?.[p] === null || st.backlog?.[p] === undefined ? 'n/a' : st.backlog[p].toLocaleString(), `stat-prio-${p}`),
        ),
      );

      const entries = Object.entries(st.tasks?.by_type ?? {}).sort((a, b) => b[1] - a[1]);
      const max = Math.max(1, ...entries.map(([, n]) => n));
      mount(
        types,
        entries.length === 0
          ? emptyState('No tasks yet.')
          : h(
              'div',
              { class: 'bars' },
              entries.map(([name, n]) => {
                const fill = h('div', { class: 'bar-fill' });
                fill.style.width = `${(100 * n) / max}%`;
                return h(
                  'a',
                  { class: 'bar-row', href: `#/tasks?type=${encodeURIComponent(name)}` },
                  h('span', { class: 'bar-label' }, name),
                  h('div', { class: 'bar-track' }, fill),
                  h('span', { class: 'bar-value' }, n.toLocaleString()),
                );
              }),
            ),
      );

      const ws = st.workers ?? [];
      mount(
        workers,
        ws.length === 0
          ? emptyState('No live workers: tasks wait in the queue until one starts.')
          : h(
              'div',
              { class: 'table-wrap' },
              h(
                'table',
                { class: 'table', id: 'workers-table' },
                h(
                  'thead',
                  {},
                  h(
                    'tr',
                    {},
                    ['Worker', 'Host', 'Busy', 'Running', 'Started', 'Last heartbeat', 'Version'].map((c) => h('th', {}, c)),
                  ),
                ),
                h(
                  'tbody',
                  {},
                  ws.map((w) => {
                    const fill = h('div', { class: 'progress-fill' });
                    fill.style.width = `${w.concurrency > 0 ? (100 * w.running) / w.concurrency : 0}%`;
                    return h(
                      'tr',
                      {},
                      h('td', { class: 'mono' }, w.id),
                      h('td', {}, w.host),
                      h('td', { class: 'progress-cell' }, h('div', { class: 'progress', 'data-status': 'running' }, fill)),
                      h('td', {}, `${w.running} / ${w.concurrency}`),
                      h('td', { class: 'nowrap' }, ago(w.started_at)),
                      h('td', { class: 'nowrap' }, ago(w.seen_at)),
                      h('td', { class: 'muted' }, w.version),
                    );
                  }),
                ),
              ),
            ),
      );
    },
    signal,
  );
}
