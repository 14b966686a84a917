// Workflows: the list with the demo's start button, and one workflow's steps drawn as boxes in
// columns by dependency depth, with arrows for `needs`, following GET /workflows/:id/events.
import { ApiError, api, follow, qs } from './api.js';
import {
  TERMINAL,
  actionButton,
  ago,
  badge,
  card,
  details,
  duration,
  emptyState,
  errorText,
  every,
  h,
  jsonBlock,
  live,
  mount,
  progressBar,
  s,
  shortId,
  toast,
} from './dom.js';

/** GET /workflows itself is missing (a server without workflows). */
const notAvailable = (err) => err instanceof ApiError && (err.status === 404 || err.status === 405);

/** POST /workflows with the built-in demo (seed 001's report); answers the new workflow's id. */
async function runDemo(topic, simulateMs, signal) {
  const r = await api('POST', '/workflows', { template: 'seed_report', input: { topic, ...(simulateMs > 0 ? { simulate_ms: simulateMs } : {}) } }, { signal });
  return r.workflow_id;
}

function demoForm(signal) {
  const topic = h('input', { id: 'demo-topic', type: 'text', value: 'mechanical keyboards', 'aria-label': 'Topic', maxlength: 500 });
  const stepMs = h('input', { id: 'demo-step-ms', type: 'number', value: 400, min: 0, max: 10000, step: 100, 'aria-label': 'Time per stage (ms)' });
  const btn = actionButton(
    'Run demo workflow',
    async () => {
      try {
        const id = await runDemo(topic.value.trim() || 'mechanical keyboards', Number(stepMs.value) || 0, signal);
        toast('Demo workflow started', 'ok');
        location.hash = `#/workflows/${encodeURIComponent(id)}`;
      } catch (err) {
        toast(errorText(err), 'error');
      }
    },
    { kind: 'primary', id: 'run-demo' },
  );
  return h(
    'div',
    { class: 'demo' },
    h(
      'p',
      { class: 'muted' },
      'Seed 001’s report as a workflow (template ',
      h('code', {}, 'seed_report'),
      '): research → market, financial and risk analysts in parallel → writer. Each stage of a step takes the time below, so you can watch them move.',
    ),
    h('div', { class: 'inline-form' }, h('label', { for: 'demo-topic' }, 'Topic'), topic, h('label', { for: 'demo-step-ms' }, 'Stage time (ms)'), stepMs, btn),
  );
}

export async function workflowsPage({ root, params, signal }) {
  const cursor = params.get('cursor') ?? '';
  const tbody = h('tbody', {});
  const table = h(
    'table',
    { class: 'table', id: 'workflows-table' },
    h(
      'thead',
      {},
      h(
        'tr',
        {},
        ['Status', 'Workflow', 'Name', 'Progress', 'Created', 'Finished'].map((c) => h('th', {}, c)),
      ),
    ),
    tbody,
  );
  const listBox = h('div', { class: 'table-wrap' }, table);
  const next = h('button', { type: 'button', class: 'btn btn-secondary', disabled: true }, 'Next →');
  const first = h('a', { class: 'btn btn-secondary', href: '#/workflows', hidden: !cursor }, '← First page');
  let nextCursor = null;
  next.addEventListener('click', () => nextCursor && (location.hash = `#/workflows${qs({ cursor: nextCursor })}`));
  mount(
    root,
    card('Run the demo', demoForm(signal)),
    card('Workflows', listBox, { cls: 'card-flush' }),
    h('div', { class: 'pager' }, h('span', { class: 'spacer' }), first, next),
  );

  every(
    2000,
    async () => {
      let page;
      try {
        page = await api('GET', `/workflows${qs({ limit: 20, cursor })}`, undefined, { signal });
      } catch (err) {
        if (notAvailable(err)) {
          mount(listBox, emptyState('This server has no workflow routes.'));
          return;
        }
        throw err;
      }
      const list = page.workflows ?? [];
      nextCursor = page.next_cursor ?? null;
      next.disabled = !nextCursor;
      if (list.length === 0) {
        mount(listBox, emptyState('No workflows yet: run the demo above.'));
        return;
      }
      if (!listBox.contains(table)) mount(listBox, table);
      tbody.replaceChildren(
        ...list.map((w) => {
          const tr = h(
            'tr',
            { class: 'row-link', 'data-workflow-id': w.workflow_id },
            h('td', {}, badge(w.status)),
            h('td', {}, h('a', { href: `#/workflows/${encodeURIComponent(w.workflow_id)}`, class: 'mono' }, shortId(w.workflow_id))),
            h('td', {}, w.name ?? '–'),
            h('td', {}, w.steps ?? '–'),
            h('td', { class: 'muted' }, w.user_id ?? '–'),
            h('td', { class: 'nowrap' }, ago(w.created_at)),
            h('td', { class: 'nowrap' }, duration(w.created_at, w.finished_at)),
          );
          tr.addEventListener('click', (e) => {
            if (!e.target.closest('a')) location.hash = `#/workflows/${encodeURIComponent(w.workflow_id)}`;
          });
          return tr;
        }),
      );
    },
    signal,
  );
}

// --- the graph ------------------------------------------------------------------------------

const BOX_W = 200;
const BOX_H = 100;
const COL_GAP = 88;
const ROW_GAP = 20;
const PAD = 16;

/** Column of each step: 0 without needs, else one past the deepest step it needs. */
function depths(steps) {
  const byId = new Map(steps.map((st) => [st.id, st]));
  const memo = new Map();
  const depth = (id, seen = new Set()) => {
    if (memo.has(id)) return memo.get(id);
    if (seen.has(id)) return 0; // a cycle: the API refuses them, but never loop here
    seen.add(id);
    const needs = (byId.get(id)?.needs ?? []).filter((n) => byId.has(n));
    const d = needs.length === 0 ? 0 : 1 + Math.max(...needs.map((n) => depth(n, seen)));
    memo.set(id, d);
    return d;
  };
  for (const st of steps) depth(st.id);
  return memo;
}

/** Positions of the boxes: columns by depth, each column centred on the tallest. */
export function layout(steps) {
  const d = depths(steps);
  const columns = [];
  for (const st of steps) (columns[d.get(st.id)] ??= []).push(st.id);
  const tallest = Math.max(...columns.map((c) => c.length));
  const height = tallest * BOX_H + (tallest - 1) * ROW_GAP;
  const pos = new Map();
  columns.forEach((col, i) => {
    const colH = col.length * BOX_H + (col.length - 1) * ROW_GAP;
    const top = (height - colH) / 2;
    col.forEach((id, j) => pos.set(id, { x: PAD + i * (BOX_W + COL_GAP), y: PAD + top + j * (BOX_H + ROW_GAP) }));
  });
  return { pos, width: PAD * 2 + columns.length * BOX_W + (columns.length - 1) * COL_GAP, height: PAD * 2 + height };
}

function graph(steps) {
  const { pos, width, height } = layout(steps);
  const wrap = h('div', { class: 'dag', id: 'workflow-graph' });
  wrap.style.width = `${width}px`;
  wrap.style.height = `${height}px`;
  const svg = s(
    'svg',
    { class: 'dag-edges', width, height, viewBox: `0 0 ${width} ${height}`, 'aria-hidden': 'true' },
    s(
      'defs',
      {},
      s(
        'marker',
        { id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' },
        s('path', { d: 'M0,0 L10,5 L0,10 z' }),
      ),
    ),
  );
  const edges = [];
  for (const st of steps) {
    for (const need of st.needs ?? []) {
      const a = pos.get(need);
      const b = pos.get(st.id);
      if (!a || !b) continue;
      const x1 = a.x + BOX_W;
      const y1 = a.y + BOX_H / 2;
      const x2 = b.x - 2;
      const y2 = b.y + BOX_H / 2;
      const mid = (x1 + x2) / 2;
      const path = s('path', {
        d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`,
        class: 'edge',
        'marker-end': 'url(#arrow)',
        'data-from': need,
        'data-to': st.id,
      });
      edges.push({ from: need, path });
      svg.append(path);
    }
  }
  wrap.append(svg);
  const boxes = new Map();
  for (const st of steps) {
    const p = pos.get(st.id);
    const bar = progressBar(st.progress ?? 0, st.status);
    const status = h('span', {});
    const msg = h('div', { class: 'node-msg' });
    const box = h(
      'a',
      { class: 'node', href: st.task_id ? `#/tasks/${st.task_id}` : '#', 'data-step': st.id, title: `${st.id} · ${st.type}` },
      h('div', { class: 'node-head' }, h('span', { class: 'node-name' }, st.id), status),
      h('div', { class: 'node-type' }, st.type),
      bar,
      msg,
    );
    box.style.left = `${p.x}px`;
    box.style.top = `${p.y}px`;
    box.style.width = `${BOX_W}px`;
    box.style.height = `${BOX_H}px`;
    wrap.append(box);
    boxes.set(st.id, { box, bar, status, msg });
  }
  wrap.update = (list) => {
    const byId = new Map(list.map((st) => [st.id, st]));
    for (const [id, b] of boxes) {
      const st = byId.get(id);
      if (!st) continue;
      b.box.dataset.status = st.status;
      mount(b.status, badge(st.status));
      b.bar.update(st.progress ?? 0, st.status);
      b.msg.textContent = st.error
        ? (st.error.message ?? st.error.code)
        : (st.message ?? (st.status === 'waiting' ? `needs ${(st.needs ?? []).join(', ')}` : ''));
    }
    for (const e of edges) e.path.classList.toggle('edge-done', byId.get(e.from)?.status === 'done');
  };
  wrap.update(steps);
  return wrap;
}

export async function workflowPage({ root, signal, setTitle }, id) {
  let wf;
  try {
    wf = await api('GET', `/workflows/${encodeURIComponent(id)}`, undefined, { signal });
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) {
      mount(root, card('Not found', h('p', {}, `No workflow ${id} for this key's tenant. `, h('a', { href: '#/workflows' }, 'Back to workflows'))));
      return;
    }
    throw err;
  }
  if (signal.aborted) return;
  setTitle(`Workflow ${wf.name ?? shortId(id)}`);

  const statusBox = h('span', { id: 'workflow-status' });
  const cancelBtn = actionButton(
    'Cancel workflow',
    async () => {
      try {
        wf = await api('DELETE', `/workflows/${encodeURIComponent(id)}`, undefined, { signal });
        toast('Workflow cancelled', 'ok');
        render();
      } catch (err) {
        toast(errorText(err), 'error');
      }
    },
    { kind: 'danger', id: 'workflow-cancel' },
  );
  const bar = progressBar(wf.progress ?? 0, wf.status, { large: true });
  bar.id = 'workflow-progress';
  const pct = h('span', { class: 'progress-pct' });
  const summary = h('span', { class: 'progress-msg' });
  const g = graph(wf.steps ?? []);
  const stepsBody = h('tbody', {});
  const detailsBox = h('div', {});
  const errorBox = h('div', {});
  const resultBox = h('div', { id: 'workflow-result' });

  mount(
    root,
    h(
      'div',
      { class: 'page-head' },
      h('div', { class: 'page-head-main' }, statusBox, h('span', { class: 'page-head-type' }, wf.name ?? 'workflow'), h('code', { class: 'mono muted' }, id)),
      h('div', { class: 'page-head-actions' }, cancelBtn),
    ),
    errorBox,
    card(null, h('div', { class: 'progress-block' }, h('div', { class: 'progress-line' }, pct, summary), bar), { cls: 'card-progress' }),
    card('Steps', h('div', { class: 'dag-scroll' }, g)),
    card(
      'Step tasks',
      h(
        'div',
        { class: 'table-wrap' },
        h(
          'table',
          { class: 'table', id: 'steps-table' },
          h(
            'thead',
            {},
            h(
              'tr',
              {},
              ['Step', 'Status', 'Type', 'Progress', 'Attempts', 'Started', 'Run time', 'Task'].map((c) => h('th', {}, c)),
            ),
          ),
          stepsBody,
        ),
      ),
      { cls: 'card-flush' },
    ),
    h('div', { class: 'grid-2 grid-wide-left' }, card('Result', resultBox), card('Details', detailsBox)),
  );

  const render = () => {
    const steps = wf.steps ?? [];
    mount(statusBox, badge(wf.status));
    statusBox.dataset.status = wf.status;
    bar.update(wf.progress ?? 0, wf.status);
    pct.textContent = `${Math.round(wf.progress ?? 0)}%`;
    const done = steps.filter((st) => st.status === 'done').length;
    summary.textContent = `${done} of ${steps.length} steps done`;
    cancelBtn.disabled = TERMINAL.has(wf.status);
    cancelBtn.dataset.keepDisabled = String(cancelBtn.disabled);
    g.update(steps);
    // The result of the steps nothing needs (the report's writer): what the workflow produced.
    const needed = new Set(steps.flatMap((st) => st.needs ?? []));
    const sinks = steps.filter((st) => !needed.has(st.id));
    const finished = sinks.filter((st) => st.status === 'done');
    mount(
      resultBox,
      finished.length === 0
        ? h(
            'div',
            { class: 'empty small' },
            TERMINAL.has(wf.status) ? 'No result.' : `The result of ${sinks.map((st) => st.id).join(', ')} shows here when it is done.`,
          )
        : jsonBlock(finished.length === 1 ? finished[0].result : Object.fromEntries(finished.map((st) => [st.id, st.result]))),
    );
    mount(errorBox, wf.error ? h('div', { class: 'error-box' }, h('strong', {}, wf.error.code ?? 'error'), ' ', wf.error.message ?? '') : null);
    stepsBody.replaceChildren(
      ...steps.map((st) =>
        h(
          'tr',
          { 'data-step': st.id },
          h('td', {}, h('strong', {}, st.id)),
          h('td', {}, badge(st.status)),
          h('td', { class: 'mono muted' }, st.type),
          h('td', { class: 'progress-cell' }, progressBar(st.progress ?? 0, st.status), h('span', { class: 'pct' }, `${Math.round(st.progress ?? 0)}%`)),
          h('td', {}, st.attempts ?? '–'),
          h('td', { class: 'nowrap' }, ago(st.started_at)),
          h('td', { class: 'nowrap' }, st.started_at ? duration(st.started_at, st.finished_at) : '–'),
          h('td', {}, st.task_id ? h('a', { href: `#/tasks/${st.task_id}`, class: 'mono' }, shortId(st.task_id)) : '–'),
        ),
      ),
    );
    mount(
      detailsBox,
      details([
        ['Workflow id', h('code', { class: 'mono' }, wf.workflow_id)],
        ['Name', wf.name],
        ['User', wf.user_id],
        wf.parent_task_id ? ['Started by', h('a', { href: `#/tasks/${wf.parent_task_id}`, class: 'mono' }, shortId(wf.parent_task_id))] : null,
        ['Created', ago(wf.created_at)],
        ['Finished', ago(wf.finished_at)],
        ['Run time', duration(wf.created_at, wf.finished_at)],
      ]),
    );
  };
  render();

  // Live: the events of every step; each one's data names its step. A fresh read now and then
  // keeps what the events do not carry (attempts, errors, results).
  let refetch;
  const refresh = () => {
    clearTimeout(refetch);
    refetch = setTimeout(async () => {
      try {
        wf = await api('GET', `/workflows/${encodeURIComponent(id)}`, undefined, { signal });
        render();
      } catch (err) {
        if (!signal.aborted) console.warn(err);
      }
    }, 200);
  };
  const patchStep = (name, fields) => {
    const steps = (wf.steps ?? []).map((st) => (st.id === name ? { ...st, ...fields } : st));
    // The workflow's progress is the mean of its steps' (as GET /workflows/:id computes it).
    wf = { ...wf, steps, progress: steps.length ? steps.reduce((n, st) => n + (st.progress ?? 0), 0) / steps.length : 0 };
  };
  const onEvent = (e) => {
    live(true);
    const d = e.data ?? {};
    if (e.event === 'workflow') {
      wf = { ...wf, status: d.status ?? wf.status };
      refresh();
    } else if (d.step) {
      if (e.event === 'status') patchStep(d.step, { status: d.status, ...(d.status === 'queued' ? { progress: 0 } : {}) });
      else if (e.event === 'progress') patchStep(d.step, { progress: d.percent, message: d.message });
      else if (TERMINAL.has(e.event)) patchStep(d.step, { status: e.event, ...(e.event === 'done' ? { progress: 100 } : {}) });
      if (e.event !== 'progress' && e.event !== 'partial' && e.event !== 'log') refresh();
    }
    render();
  };
  try {
    await follow(`/workflows/${encodeURIComponent(id)}/events`, {
      onEvent,
      isFinal: (e) => e.event === 'workflow' && TERMINAL.has(e.data?.status),
      signal,
    });
    refresh();
  } catch (err) {
    if (signal.aborted) return;
    // No event stream (an older server): read the workflow every 1.5 s instead.
    console.warn('workflow events:', errorText(err));
    every(
      1500,
      async () => {
        if (TERMINAL.has(wf.status)) return;
        wf = await api('GET', `/workflows/${encodeURIComponent(id)}`, undefined, { signal });
        render();
      },
      signal,
    );
  }
}
