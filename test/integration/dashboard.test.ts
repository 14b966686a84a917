/**
 * The dashboard at /ui in a real browser: Debian's chromium driven by playwright-core, against
 * the embedded product (`npm start`: API and worker in one process) with API keys on. The page
 * asks for the key on the first 401; a task submitted from the form reaches `done` with its
 * progress bar moving; the list shows it and opens its page; a slow task is cancelled from its
 * page; the demo workflow's steps change state live; dead letters are redriven; the stats page
 * lists the worker. Screenshots go to .cache/artifacts/dashboard/.
 *
 * Chromium comes from apt: the setup installs it when /usr/bin/chromium is missing and it can
 * (root and apt-get); otherwise the test fails and names what is missing.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { REPO_ROOT } from '../../infra/lib.ts';
import { killAll, startApi, type Child } from '../support/processes.ts';

const CHROMIUM = '/usr/bin/chromium';
const SHOTS = join(REPO_ROOT, '.cache', 'artifacts', 'dashboard');
const TASK_URL = /#\/tasks\/([0-9a-f-]{36})$/;

/**
 * What the functions the test runs in the page use (this file is compiled without the DOM's
 * types). They are functions, not strings: the page's Content-Security-Policy forbids eval.
 */
interface PageEl {
  dataset: Record<string, string | undefined>;
  style: { width: string };
  replaceChildren(): void;
}
interface PageWindow {
  document: { querySelector(sel: string): PageEl | null; querySelectorAll(sel: string): ArrayLike<PageEl> };
  sessionStorage: { getItem(key: string): string | null };
  MutationObserver: new (cb: () => void) => { observe(target: PageEl, opts: object): void };
  widths: string[];
  states: Record<string, string[]>;
}

/** The chromium executable, installed with apt-get when missing (and this process can). */
function ensureChromium(): string {
  if (existsSync(CHROMIUM)) return CHROMIUM;
  const why = `the dashboard test needs Debian's chromium at ${CHROMIUM} (apt-get install -y chromium)`;
  if (process.platform !== 'linux' || process.getuid?.() !== 0) throw new Error(`${why}; it is missing and this test cannot install it (not root)`);
  if (!existsSync('/usr/bin/apt-get')) throw new Error(`${why}; it is missing and there is no apt-get to install it`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const apt = (args: string[]) => execFileSync('apt-get', args, { env, stdio: ['ignore', 'pipe', 'pipe'], timeout: 200_000 });
  process.stderr.write(`[dashboard] ${CHROMIUM} is missing: apt-get install -y --no-install-recommends chromium\n`);
  try {
    apt(['install', '-y', '--no-install-recommends', 'chromium']);
  } catch {
    // A fresh machine's package lists may be empty or stale.
    try {
      apt(['update']);
      apt(['install', '-y', '--no-install-recommends', 'chromium']);
    } catch (err) {
      const e = err as { stderr?: Buffer; message: string };
      throw new Error(`${why}; apt-get could not install it: ${(e.stderr?.toString() ?? e.message).trim().split('\n').slice(-3).join(' | ')}`);
    }
  }
  if (!existsSync(CHROMIUM)) throw new Error(`${why}; apt-get ran but ${CHROMIUM} is still missing`);
  return CHROMIUM;
}

describe('dashboard in chromium', () => {
  let api: { child: Child; url: string };
  let key: string;
  let browser: Browser;
  let page: Page;
  const pageErrors: string[] = [];

  // Without the toasts of earlier steps (removed, not hidden with a style: the page's CSP forbids inline
  // styles); a failure's shot keeps them, they say what went wrong.
  const shot = async (name: string) => {
    await page.evaluate(() => (globalThis as unknown as PageWindow).document.querySelector('#toasts')?.replaceChildren());
    await page.screenshot({ path: join(SHOTS, `${name}.png`), animations: 'disabled' });
  };
  const failShot = (name: string) => onTestFailed(() => page.screenshot({ path: join(SHOTS, `failed-${name}.png`) }).then(() => undefined));

  /** Submits from the form (type agent, this input) and answers the new task's id, once its page is open. */
  const submitAgent = async (input: object): Promise<string> => {
    await page.goto(`${api.url}/ui#/submit`);
    await page.waitForSelector('#submit-type option[value="agent"]', { state: 'attached' });
    await page.selectOption('#submit-type', 'agent');
    await page.fill('#submit-input', JSON.stringify(input, null, 2));
    await page.click('#submit-button');
    await page.waitForURL(TASK_URL, { timeout: 10_000 });
    return TASK_URL.exec(page.url())?.[1] ?? '';
  };

  beforeAll(async () => {
    const executablePath = ensureChromium();
    mkdirSync(SHOTS, { recursive: true });
    // The embedded product with keys on: it prints one key with every scope at start.
    api = await startApi({ BROKER: 'memory', AUTH: 'keys', LOG_LEVEL: 'warn', RETRY_BASE_MS: '50', RETRY_MAX_MS: '100', WORKER_CONCURRENCY: '4' });
    key = api.child.lines.map((l) => /^\s+(atq_[A-Za-z0-9_-]{43})\s*$/.exec(l)?.[1]).find(Boolean) ?? '';
    expect(key, 'the embedded API prints a bootstrap key').toMatch(/^atq_/);
    browser = await chromium.launch({ executablePath, headless: true, args: ['--no-sandbox', '--disable-dev-shm-usage'] });
    page = await browser.newPage({ viewport: { width: 1360, height: 860 } });
    page.on('pageerror', (e) => pageErrors.push(e.message));
    page.on('console', (m) => {
      if (m.type() === 'error' && !/Failed to load resource/.test(m.text())) pageErrors.push(m.text());
    });
  });

  afterAll(async (ctx) => {
    if (ctx.tasks.some((t) => t.result?.state === 'fail') && api) process.stderr.write(`--- api (last lines)\n${api.child.lines.slice(-20).join('\n')}\n`);
    await browser?.close();
    await killAll();
  });

  it('asks for the API key on the first 401, then lists tasks with it', async () => {
    failShot('key');
    await page.goto(`${api.url}/ui`);
    await page.waitForSelector('#key-dialog[open] #key-input', { timeout: 10_000 });
    await shot('key-prompt');
    // Dismissed, it stays away (the list's polls do not ask again) until "Enter key".
    await page.click('#key-cancel');
    await page.waitForSelector('#key-button:has-text("Enter key")');
    await page.waitForTimeout(2500);
    expect(await page.isVisible('#key-dialog')).toBe(false);
    await page.click('#key-button');
    await page.waitForSelector('#key-dialog[open] #key-input', { timeout: 10_000 });
    await page.fill('#key-input', key);
    await page.click('#key-save');
    await page.waitForSelector('#key-dialog', { state: 'hidden' });
    await page.waitForSelector('#tasks-table:visible, .empty:visible');
    expect(await page.evaluate(() => (globalThis as unknown as PageWindow).sessionStorage.getItem('atq.apiKey'))).toBe(key);
    expect(await page.textContent('#key-button')).toBe('Change key');
  });

  it('submits a task from the form and watches it reach done, the progress bar moving', async () => {
    failShot('submit');
    const id = await submitAgent({ content: 'The new mechanical keyboard is great value, it ships fast and I recommend it.', simulate_ms: 700 });
    // Every width the bar takes, with the status shown at that moment (in the page: this file has no DOM types).
    await page.waitForSelector('#task-progress');
    await page.evaluate(() => {
      const w = globalThis as unknown as PageWindow;
      const fill = w.document.querySelector('#task-progress .progress-fill');
      if (!fill) throw new Error('no progress bar');
      const note = () => w.widths.push(`${w.document.querySelector('#task-status')?.dataset.status}:${fill.style.width}`);
      w.widths = [];
      note();
      new w.MutationObserver(note).observe(fill, { attributes: true, attributeFilter: ['style'] });
    });
    await page.waitForFunction(
      () => parseFloat((globalThis as unknown as PageWindow).document.querySelector('#task-progress .progress-fill')?.style.width ?? '0') >= 35,
      null,
      { timeout: 15_000 },
    );
    await shot('task-running');
    await page.waitForSelector('#task-status[data-status="done"]', { timeout: 20_000 });
    const widths = await page.evaluate(() => (globalThis as unknown as PageWindow).widths);
    const before = new Set(widths.filter((w) => !w.startsWith('done:')).map((w) => w.split(':')[1]));
    expect(before.size, `widths before done: ${widths.join(', ')}`).toBeGreaterThanOrEqual(2);
    expect(await page.evaluate(() => (globalThis as unknown as PageWindow).document.querySelector('#task-progress .progress-fill')?.style.width)).toBe('100%');
    await page.waitForSelector('#task-result pre');
    expect(await page.textContent('#task-result')).toContain('"sentiment": "positive"');
    expect(await page.textContent('#task-output')).toContain('positive message');
    expect(await page.locator('#task-timeline li[data-event="progress"]').count()).toBeGreaterThanOrEqual(4);
    expect(await page.locator('#task-timeline li[data-event="done"]').count()).toBe(1);
    await shot('task-done');

    // The list shows it done; a click opens its page.
    await page.goto(`${api.url}/ui#/tasks`);
    const row = page.locator(`tr[data-task-id="${id}"]`);
    await row.waitFor({ timeout: 10_000 });
    await page.waitForSelector(`tr[data-task-id="${id}"][data-status="done"]`, { timeout: 5000 });
    await shot('tasks');
    await row.locator('td.message').click();
    await page.waitForURL(new RegExp(`#/tasks/${id}$`));
    await page.waitForSelector('#task-status[data-status="done"]');
    expect(pageErrors).toEqual([]);
  });

  let slowId = '';
  it('cancels a slow task from its page', async () => {
    failShot('cancel');
    slowId = await submitAgent({ content: 'a slow one', simulate_ms: 30_000 });
    await page.waitForSelector('#task-status[data-status="running"]', { timeout: 10_000 });
    await page.click('#task-cancel');
    await page.waitForSelector('#task-status[data-status="cancelled"]', { timeout: 5000 });
    await page.waitForSelector('#task-timeline li[data-event="cancelled"]', { timeout: 5000 });
    expect(await page.isDisabled('#task-cancel')).toBe(true);
    expect(await page.isEnabled('#task-rerun')).toBe(true);
    await shot('task-cancelled');
    expect(pageErrors).toEqual([]);
  });

  it('reruns the cancelled task (POST /tasks/:id/retry), then cancels it again', async () => {
    failShot('rerun');
    expect(slowId).not.toBe('');
    await page.click('#task-rerun');
    await page.waitForSelector('#task-status[data-status="running"]', { timeout: 10_000 });
    await page.click('#task-cancel');
    await page.waitForSelector('#task-status[data-status="cancelled"]', { timeout: 5000 });
    expect(await page.locator('#task-timeline li[data-event="cancelled"]').count()).toBe(2);
  });

  it('runs the demo workflow and shows each step change state', async () => {
    failShot('workflow');
    await page.goto(`${api.url}/ui#/workflows`);
    await page.fill('#demo-topic', 'mechanical keyboards');
    await page.fill('#demo-step-ms', '250');
    await page.click('#run-demo');
    await page.waitForURL(/#\/workflows\/[^/]+$/, { timeout: 10_000 });
    await page.waitForSelector('#workflow-graph .node', { timeout: 10_000 });
    // Every state each step's box shows, in order.
    await page.evaluate(() => {
      const w = globalThis as unknown as PageWindow;
      w.states = {};
      for (const node of Array.from(w.document.querySelectorAll('#workflow-graph .node'))) {
        const seen = (w.states[node.dataset.step ?? ''] = [node.dataset.status ?? '']);
        new w.MutationObserver(() => {
          if (seen.at(-1) !== node.dataset.status) seen.push(node.dataset.status ?? '');
        }).observe(node, { attributes: true, attributeFilter: ['data-status'] });
      }
    });
    expect(await page.locator('#workflow-graph .node').count()).toBeGreaterThanOrEqual(3);
    expect(await page.locator('#workflow-graph path.edge').count()).toBeGreaterThanOrEqual(2);
    // A shot with the research done and the analysts at work (if the moment is caught).
    await page.waitForSelector('#workflow-graph .node[data-step="research"][data-status="done"]', { timeout: 15_000 }).catch(() => undefined);
    await page.waitForSelector('#workflow-graph .node[data-status="running"]', { timeout: 5000 }).catch(() => undefined);
    await shot('workflow-running');
    await page.waitForSelector('#workflow-status[data-status="done"]', { timeout: 30_000 });
    await page.waitForFunction(
      () => Array.from((globalThis as unknown as PageWindow).document.querySelectorAll('#workflow-graph .node')).every((n) => n.dataset.status === 'done'),
      null,
      { timeout: 5000 },
    );
    const states = await page.evaluate(() => (globalThis as unknown as PageWindow).states);
    for (const [step, seen] of Object.entries(states)) {
      expect(seen.at(-1), step).toBe('done');
      expect(seen.length, `${step}: ${seen.join(' → ')}`).toBeGreaterThanOrEqual(2);
    }
    await shot('workflow-done');
    expect(pageErrors).toEqual([]);
  });

  it('lists a dead letter and redrives it', async () => {
    failShot('dead-letters');
    // Fails every attempt (the retry backoff is 50 ms here): a dead letter within a second.
    const id = await submitAgent({ content: 'never works', fail_times: 100 });
    await page.waitForSelector('#task-status[data-status="failed"]', { timeout: 15_000 });
    await page.goto(`${api.url}/ui#/dead-letters`);
    const row = page.locator(`#dead-letters-table tr[data-task-id="${id}"]`);
    await row.waitFor({ timeout: 10_000 });
    await shot('dead-letters');
    await row.locator('input[type="checkbox"]').check();
    await page.click('#redrive-selected');
    await page.waitForSelector('.toast-ok:has-text("1 task redriven")', { timeout: 5000 });
  });

  it('shows the queue statistics and the worker', async () => {
    failShot('stats');
    await page.goto(`${api.url}/ui#/stats`);
    await page.waitForSelector('#workers-table tbody tr', { timeout: 10_000 });
    expect(Number(await page.textContent('[data-stat="done"] .stat-value'))).toBeGreaterThanOrEqual(1);
    expect(await page.textContent('#tenant')).toContain('default');
    await shot('stats');
    // The list after all of the above: done, cancelled and failed tasks, and the workflow's steps.
    await page.goto(`${api.url}/ui#/tasks`);
    await page.waitForSelector('#tasks-table tbody tr[data-status="cancelled"]');
    await shot('tasks-all');
    expect(pageErrors).toEqual([]);
  });

  it('works without a key when AUTH=off', async () => {
    failShot('auth-off');
    const open = await startApi({ BROKER: 'memory', AUTH: 'off', LOG_LEVEL: 'warn' });
    const fresh = await browser.newPage({ viewport: { width: 1360, height: 860 } });
    try {
      await fresh.goto(`${open.url}/ui#/submit`);
      await fresh.waitForSelector('#submit-type option[value="agent"]', { state: 'attached' });
      await fresh.click('#submit-button');
      await fresh.waitForURL(TASK_URL, { timeout: 10_000 });
      await fresh.waitForSelector('#task-status[data-status="done"]', { timeout: 15_000 });
      expect(await fresh.isVisible('#key-dialog')).toBe(false);
      expect(await fresh.isHidden('#key-button')).toBe(true);
    } finally {
      await fresh.close();
      await open.child.stop();
    }
  });
});
