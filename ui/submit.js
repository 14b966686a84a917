// The form to submit a task: POST /tasks in the general form. The types and an example input
// of each come from GET /openapi.json; `agent` gets an input that shows progress moving.
import { api, taskTypes } from './api.js';
import { card, errorText, h, mount, toast } from './dom.js';

/** Inputs that make a good first run; other types start from the document's example. */
const DEFAULTS = {
  agent: { content: 'The new mechanical keyboard is great value, it ships fast and I recommend it.', simulate_ms: 600 },
};

export async function submitPage({ root, params, signal }) {
  const types = await taskTypes();
  if (signal.aborted) return;
  const initial =
    params.get('type') && types.some((t) => t.name === params.get('type'))
      ? params.get('type')
      : types.some((t) => t.name === 'agent')
        ? 'agent'
        : types[0].name;

  const typeSel = h(
    'select',
    { id: 'submit-type', name: 'type' },
    types.map((t) => h('option', { value: t.name, selected: t.name === initial }, t.name)),
  );
  const prioSel = h(
    'select',
    { id: 'submit-priority', name: 'priority' },
    ['high', 'normal', 'low'].map((p) => h('option', { value: p, selected: p === 'normal' }, p)),
  );
  const userIn = h('input', { id: 'submit-user', name: 'user_id', type: 'text', placeholder: 'optional', maxlength: 256, value: 'dashboard' });
  const delayIn = h('input', { id: 'submit-delay', name: 'delay_ms', type: 'number', min: 0, step: 1000, placeholder: 'run now' });
  const inputArea = h('textarea', { id: 'submit-input', name: 'input', rows: 9, spellcheck: 'false', class: 'mono' });
  const inputError = h('div', { class: 'field-error', id: 'submit-input-error' });
  const typeHelp = h('p', { class: 'hint' });
  const submitBtn = h('button', { type: 'submit', class: 'btn btn-primary', id: 'submit-button' }, 'Submit task');
  const preview = h('pre', { class: 'code small', id: 'submit-preview' });

  const fill = () => {
    const t = types.find((x) => x.name === typeSel.value);
    inputArea.value = JSON.stringify(DEFAULTS[typeSel.value] ?? t?.example ?? {}, null, 2);
    typeHelp.textContent = t?.name === 'agent' ? 'simulate_ms stretches each of the four steps, so you can watch the progress bar move.' : '';
    update();
  };
  const body = () => {
    const input = JSON.parse(inputArea.value);
    const delay = delayIn.value === '' ? null : Number(delayIn.value);
    return {
      type: typeSel.value,
      input,
      priority: prioSel.value,
      ...(userIn.value.trim() ? { user_id: userIn.value.trim() } : {}),
      ...(delay ? { delay_ms: delay } : {}),
    };
  };
  const update = () => {
    try {
      preview.textContent = `POST /tasks\n${JSON.stringify(body(), null, 2)}`;
      inputError.textContent = '';
      inputArea.classList.remove('invalid');
      submitBtn.disabled = false;
    } catch (err) {
      inputError.textContent = `Not valid JSON: ${err.message}`;
      inputArea.classList.add('invalid');
      submitBtn.disabled = true;
    }
  };
  typeSel.addEventListener('change', fill);
  for (const el of [inputArea, prioSel, userIn, delayIn]) el.addEventListener('input', update);

  const form = h(
    'form',
    { class: 'form', id: 'submit-form', novalidate: true },
    h('div', { class: 'form-row' }, field('Type', typeSel), field('Priority', prioSel)),
    h('div', { class: 'form-row' }, field('User id', userIn), field('Delay (ms)', delayIn, 'Optional: the task stays scheduled until then.')),
    field('Input (JSON)', inputArea, null, [typeHelp, inputError]),
    h('div', { class: 'form-actions' }, submitBtn, h('a', { class: 'btn btn-ghost', href: '#/tasks' }, 'Cancel')),
  );
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    let payload;
    try {
      payload = body();
    } catch {
      return;
    }
    submitBtn.disabled = true;
    try {
      const r = await api('POST', '/tasks', payload, { signal });
      toast(`Task ${r.task_id.slice(0, 8)} ${r.status}`, 'ok');
      location.hash = `#/tasks/${r.task_id}`;
    } catch (err) {
      const issues = err.body?.error?.issues;
      inputError.textContent = issues?.length ? issues.map((i) => `${i.path}: ${i.message}`).join('; ') : errorText(err);
      toast(errorText(err), 'error');
    } finally {
      submitBtn.disabled = false;
    }
  });

  mount(root, h('div', { class: 'grid-2 grid-wide-left' }, card('Submit a task', form), card('Request', preview)));
  fill();
}

function field(label, control, hint = null, extra = []) {
  const id = control.id;
  return h('div', { class: 'field' }, h('label', { for: id }, label), control, hint ? h('p', { class: 'hint' }, hint) : null, extra);
}
