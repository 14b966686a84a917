// One task: its state, a progress bar, the streamed output, the result and the history
// timeline, all following GET /tasks/:id/events (read with fetch, resumed with Last-Event-ID).
import { ApiError, api, follow } from './api.js';
import { TERMINAL, actionButton, ago, badge, card, details, duration, errorText, h, jsonBlock, live, mount, progressBar, toast } from './dom.js';

const FINAL = new Set(['done', 'failed', 'cancelled']);

const clock = (iso) => {
  const d = new Date(iso);
  return `${d.toLocaleTimeString([], { hour12: false })}.${String(d.getMilliseconds()).padStart(3, '0')}`;
};

/** One line of the timeline for an event. */
function describe(e) {
  const d = e.data ?? {};
  switch (e.event) {
    case 'status': {
      const bits = [];
      if (d.status === 'running') bits.push(`attempt ${d.attempt}`, d.worker ? `on ${d.worker}` : null, d.after_lost_lease ? 'after a lost lease' : null);
      if (d.rerun) bits.push(`rerun ${d.rerun}`);
      if (d.retry_at) bits.push(`retry ${new Date(d.retry_at).toLocaleTimeString([], { hour12: false })}`);
      if (d.error) bits.push(d.error.message ?? d.error.code);
      if (d.run_at) bits.push(`runs at ${new Date(d.run_at).toLocaleString()}`);
      return [badge(d.status), h('span', { class: 'muted' }, bits.filter(Boolean).join(' · '))];
    }
    case 'progress':
      return [h('strong', {}, `${Math.round(d.percent)}%`), h('span', {}, d.message ?? '')];
    case 'log':
      return [
        h('span', { class: `log-level log-${d.level}` }, d.level),
        h('span', {}, d.message),
        d.data ? h('code', { class: 'inline-json' }, JSON.stringify(d.data)) : null,
      ];
    case 'done':
      return [badge('done'), h('span', { class: 'muted' }, 'result stored')];
    case 'failed':
      return [badge('failed'), h('span', { class: 'text-error' }, `${d.error?.code ?? ''}: ${d.error?.message ?? ''}`)];
    case 'cancelled':
      return [badge('cancelled'), d.reason ? h('span', { class: 'muted' }, d.reason) : null];
    default:
      return [h('span', {}, e.event), h('code', { class: 'inline-json' }, JSON.stringify(d))];
  }
}

export async function taskPage({ root, signal, setTitle }, id) {
  let task = await api('GET', `/tasks/${id}`, undefined, { signal }).catch((err) => {
    if (err instanceof ApiError && err.status === 404) return null;
    throw err;
  });
  if (signal.aborted) return;
  if (!task) {
    mount(root, card('Not found', h('p', {}, `No task ${id} for this key's tenant (it may have expired). `, h('a', { href: '#/tasks' }, 'Back to tasks'))));
    return;
  }
  setTitle(`Task ${id.slice(0, 8)}`);

  // --- the header ---
  const statusBox = h('span', { id: 'task-status' });
  const cancelBtn = actionButton(
    'Cancel',
    async () => {
      try {
        task = await api('DELETE', `/tasks/${id}?reason=${encodeURIComponent('cancelled from the dashboard')}`, undefined, { signal });
        toast('Task cancelled', 'ok');
        render();
      } catch (err) {
        toast(errorText(err), 'error');
      }
    },
    { kind: 'danger', id: 'task-cancel' },
  );
  const rerunBtn = actionButton(
    'Rerun',
    async () => {
      try {
        task = await api('POST', `/tasks/${id}/retry`, undefined, { signal });
        toast('Task queued again', 'ok');
        newRun = true;
        render();
        startFollowing();
      } catch (err) {
        toast(errorText(err), 'error');
      }
    },
    { kind: 'secondary', id: 'task-rerun', title: 'POST /tasks/:id/retry: a fresh set of attempts, history kept' },
  );

  const bar = progressBar(task.progress, task.status, { large: true });
  bar.id = 'task-progress';
  const pct = h('span', { class: 'progress-pct', id: 'task-percent' });
  const message = h('span', { class: 'progress-msg', id: 'task-message' });
  const attempt = h('span', { class: 'muted' });

  const output = h('pre', { class: 'code output', id: 'task-output' });
  const outputEmpty = h('div', { class: 'empty small' }, 'No streamed output yet.');
  const resultBox = h('div', { id: 'task-result' });
  const detailsBox = h('div', {});
  const timeline = h('ol', { class: 'timeline', id: 'task-timeline' });
  const timelineCount = h('span', { class: 'muted' });

  mount(
    root,
    h(
      'div',
      { class: 'page-head' },
      h(
        'div',
        { class: 'page-head-main' },
        statusBox,
        h('span', { class: 'page-head-type' }, task.type),
        h('code', { class: 'mono muted', title: 'task id' }, id),
      ),
      h('div', { class: 'page-head-actions' }, cancelBtn, rerunBtn),
    ),
    card(null, h('div', { class: 'progress-block' }, h('div', { class: 'progress-line' }, pct, message, h('span', { class: 'spacer' }), attempt), bar), {
      cls: 'card-progress',
    }),
    h(
      'div',
      { class: 'grid-2' },
      h('div', { class: 'col' }, card('Output', [outputEmpty, output], { id: 'output-card' }), card('Result', resultBox, { id: 'result-card' })),
      h('div', { class: 'col' }, card('Details', detailsBox), card(h('span', {}, 'History ', timelineCount), timeline, { id: 'history-card' })),
    ),
  );

  let outputText = '';
  let newRun = false;
  const render = () => {
    mount(statusBox, badge(task.status));
    statusBox.dataset.status = task.status;
    bar.update(task.progress, task.status);
    pct.textContent = `${Math.round(task.progress)}%`;
    message.textContent = task.message ?? (task.status === 'queued' ? 'waiting for a worker' : '');
    attempt.textContent = task.attempts > 0 ? `attempt ${task.attempts} of ${task.max_attempts}` : '';
    cancelBtn.disabled = TERMINAL.has(task.status);
    cancelBtn.dataset.keepDisabled = String(cancelBtn.disabled);
    rerunBtn.disabled = !(task.status === 'failed' || task.status === 'cancelled');
    rerunBtn.dataset.keepDisabled = String(rerunBtn.disabled);
    output.textContent = outputText;
    output.hidden = outputText === '';
    outputEmpty.hidden = outputText !== '';
    if (task.status === 'done') mount(resultBox, jsonBlock(task.result));
    else if (task.error) mount(resultBox, h('div', { class: 'error-box' }, h('strong', {}, task.error.code ?? 'error'), ' ', task.error.message ?? ''));
    else mount(resultBox, h('div', { class: 'empty small' }, TERMINAL.has(task.status) ? 'No result.' : 'The result shows here when the task is done.'));
    mount(
      detailsBox,
      details([
        ['Task id', h('code', { class: 'mono' }, task.task_id)],
        ['Type', task.type],
        ['Tenant', task.tenant],
        ['User', task.user_id],
        ['Priority', task.priority],
        task.workflow_id
          ? ['Workflow', h('a', { href: `#/workflows/${encodeURIComponent(task.workflow_id)}` }, task.step ? `${task.step} · ` : '', shortWf(task.workflow_id))]
          : null,
        task.run_at ? ['Runs at', ago(task.run_at)] : null,
        ['Attempts', `${task.attempts} of ${task.max_attempts}${task.reruns ? ` · ${task.reruns} rerun${task.reruns === 1 ? '' : 's'}` : ''}`],
        ['Created', ago(task.created_at)],
        ['Started', ago(task.started_at)],
        ['Finished', ago(task.finished_at)],
        ['Run time', task.started_at ? duration(task.started_at, task.finished_at) : null],
        task.retry_at && !TERMINAL.has(task.status) ? ['Retry at', ago(task.retry_at)] : null,
        task.downgraded ? ['Downgraded', 'yes (quota short)'] : null,
      ]),
    );
  };
  render();

  // --- the timeline ---
  let lastPartial = null;
  let count = 0;
  const addEvent = (e) => {
    count++;
    timelineCount.textContent = `· ${count} event${count === 1 ? '' : 's'}`;
    if (e.event === 'partial') {
      // Runs of chunks are one line: a token stream would flood the list.
      if (lastPartial && timeline.lastElementChild === lastPartial.li) {
        lastPartial.chunks++;
        lastPartial.chars += e.data.chunk.length;
        lastPartial.text.textContent = `${lastPartial.chars} characters in ${lastPartial.chunks} chunks`;
        return;
      }
      const text = h('span', { class: 'muted' }, `${e.data.chunk.length} characters`);
      const li = h('li', { 'data-event': 'partial' }, h('time', { class: 'tl-time' }, clock(e.data.at)), h('span', { class: 'tl-kind' }, 'output'), text);
      lastPartial = { li, text, chunks: 1, chars: e.data.chunk.length };
      timeline.append(li);
      return;
    }
    timeline.append(
      h(
        'li',
        { 'data-event': e.event, class: `tl-${e.event}` },
        h('time', { class: 'tl-time', title: e.data?.at }, e.data?.at ? clock(e.data.at) : ''),
        h('span', { class: 'tl-kind' }, e.event),
        h('span', { class: 'tl-body' }, describe(e)),
      ),
    );
  };

  // --- following the stream ---
  let lastId = null;
  let refetch;
  const refreshView = () => {
    clearTimeout(refetch);
    refetch = setTimeout(async () => {
      try {
        const fresh = await api('GET', `/tasks/${id}`, undefined, { signal });
        // The stream may be ahead of the read: keep the newer progress.
        task = { ...fresh, progress: TERMINAL.has(fresh.status) ? fresh.progress : Math.max(fresh.progress, task.status === fresh.status ? task.progress : 0) };
        if (TERMINAL.has(task.status) && (task.output ?? '').length > outputText.length) outputText = task.output ?? ''; // history trimmed
        render();
      } catch (err) {
        if (!signal.aborted) console.warn(err);
      }
    }, 150);
  };
  const onEvent = (e) => {
    live(true);
    lastId = e.id ?? lastId;
    addEvent(e);
    const d = e.data ?? {};
    switch (e.event) {
      case 'status':
        if (d.rerun || (newRun && d.status === 'queued')) {
          outputText = '';
          newRun = false;
        }
        task = { ...task, status: d.status, ...(d.status === 'queued' ? { progress: 0 } : {}) };
        refreshView();
        break;
      case 'progress':
        task = { ...task, progress: d.percent, message: d.message };
        break;
      case 'partial':
        outputText += d.chunk;
        break;
      case 'done':
        task = { ...task, status: 'done', progress: 100, result: d.result };
        refreshView();
        break;
      case 'failed':
        task = { ...task, status: 'failed', error: d.error };
        refreshView();
        break;
      case 'cancelled':
        task = { ...task, status: 'cancelled' };
        refreshView();
        break;
    }
    render();
  };
  // One stream at a time: a rerun's stream starts after the last event of the run before.
  let streams = Promise.resolve();
  const startFollowing = () => {
    streams = streams.then(() =>
      follow(`/tasks/${id}/events`, { onEvent, isFinal: (e) => FINAL.has(e.event), signal, lastEventId: lastId }).catch((err) => {
        if (!signal.aborted) toast(`Event stream: ${errorText(err)}`, 'error');
      }),
    );
  };
  startFollowing();
}

const shortWf = (id) => (id.length > 12 ? `${id.slice(0, 12)}…` : id);
