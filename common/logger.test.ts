import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { context, trace } from '@opentelemetry/api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger, silentLogger, type LoggerOptions } from './logger.ts';

function capture(opts: LoggerOptions = {}, bound: Record<string, unknown> = {}) {
  const lines: string[] = [];
  const logger = createLogger({ format: 'json', ...opts, write: (l) => lines.push(l) }, bound);
  const records = () => lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  return { logger, lines, records };
}

describe('createLogger', () => {
  it('writes one JSON object per line with level as a label, ISO time, msg and the fields', () => {
    const { logger, lines, records } = capture({}, { role: 'api' });
    logger.info('task started', { task_id: 't1', attempt: 1 });
    logger.error('100% failed %s', { ok: false });
    expect(lines).toHaveLength(2);
    for (const l of lines) expect(l).not.toContain('\n');
    const [a, b] = records();
    expect(a).toEqual({
      level: 'info',
      time: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/) as unknown,
      role: 'api',
      task_id: 't1',
      attempt: 1,
      msg: 'task started',
    });
    expect(new Date(String(a?.time)).getTime()).toBeGreaterThan(Date.now() - 60_000);
    // No printf-style formatting of the message, no pid or hostname.
    expect(b).toEqual({ level: 'error', time: expect.any(String) as unknown, role: 'api', ok: false, msg: '100% failed %s' });
  });

  it('drops lines under its level, and says which levels are on', () => {
    const { logger, records } = capture({ level: 'warn' });
    logger.debug('d');
    logger.info('i');
    logger.warn('w');
    logger.error('e');
    expect(records().map((r) => [r.level, r.msg])).toEqual([
      ['warn', 'w'],
      ['error', 'e'],
    ]);
    expect(logger.enabled?.('info')).toBe(false);
    expect(logger.enabled?.('warn')).toBe(true);
    expect(capture().logger.enabled?.('info')).toBe(true);
    expect(capture().logger.enabled?.('debug')).toBe(false);
    const debug = capture({ level: 'debug' });
    debug.logger.debug('now it shows');
    expect(debug.records()[0]).toMatchObject({ level: 'debug', msg: 'now it shows' });
  });

  it('binds child fields, nested, and the call fields win', () => {
    const { logger, records } = capture({}, { role: 'worker' });
    const task = logger.child({ task_id: 't1', attempt: 1 });
    task.child({ step: 'claim' }).info('claimed', { attempt: 2 });
    logger.info('no child fields');
    const [a, b] = records();
    expect(a).toMatchObject({ role: 'worker', task_id: 't1', step: 'claim', attempt: 2, msg: 'claimed' });
    expect(b).not.toHaveProperty('task_id');
  });

  it('renders errors usefully: a message string as is, an Error with type, message and stack under any key', () => {
    const { logger, records } = capture();
    logger.warn('publish failed', { err: 'connection refused' });
    logger.error('boom', { err: new TypeError('bad thing'), cause: new Error('deeper') });
    const [a, b] = records();
    expect(a?.err).toBe('connection refused');
    expect(b?.err).toMatchObject({ type: 'TypeError', message: 'bad thing', stack: expect.stringContaining('bad thing') as unknown });
    expect(b?.cause).toMatchObject({ type: 'Error', message: 'deeper' });
  });

  it('redacts a handler’s payload fields two levels down (ctx.log data sits under data)', () => {
    const { logger, lines, records } = capture();
    logger.info('llm call', { data: { prompt: 'the user secret', step: 2, call: { messages: ['hi'], completion: 'answer', tokens: 9 } }, attempt: 1 });
    expect(records()[0]).toMatchObject({
      data: { prompt: '[redacted]', step: 2, call: { messages: '[redacted]', completion: '[redacted]', tokens: 9 } },
      attempt: 1,
    });
    expect(lines[0]).not.toMatch(/the user secret|answer/);
  });

  it('redacts payloads and credentials, at the top level and one level down', () => {
    const { logger, lines, records } = capture({}, { input: { content: 'bound secret' } });
    logger.info('x', {
      output: 'the output',
      result: { summary: 's' },
      results: [1],
      content: 'text',
      body: '{"a":1}',
      headers: { authorization: 'Bearer atq_abc', accept: '*/*' },
      task: { input: { content: 'hi' }, id: 't1' },
      password: 'p',
      secret: 's',
      api_key: 'k',
      token: 't',
      task_id: 't1',
      key: 'message key',
    });
    const r = records()[0] ?? {};
    for (const k of ['input', 'output', 'result', 'results', 'content', 'body', 'password', 'secret', 'api_key', 'token']) expect(r[k], k).toBe('[redacted]');
    expect(r.headers).toEqual({ authorization: '[redacted]', accept: '*/*' });
    expect(r.task).toEqual({ input: '[redacted]', id: 't1' });
    expect(r).toMatchObject({ task_id: 't1', key: 'message key' });
    expect(lines[0]).not.toMatch(/the output|bound secret|atq_abc|"hi"/);
  });

  it('logs payloads with LOG_PAYLOADS, but never credentials', () => {
    const { logger, records } = capture({ payloads: true });
    logger.info('x', { input: { content: 'hi' }, output: 'o', result: { a: 1 }, headers: { authorization: 'Bearer k' }, token: 't' });
    expect(records()[0]).toMatchObject({
      input: { content: 'hi' },
      output: 'o',
      result: { a: 1 },
      headers: { authorization: '[redacted]' },
      token: '[redacted]',
    });
  });

  it('writes one readable line with LOG_FORMAT=pretty', () => {
    const { logger, lines } = capture({ format: 'pretty' }, { role: 'api' });
    logger.warn('disk nearly full', { free: 3, err: 'ENOSPC soon', input: 'x' });
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^\[\d{4}-\d\d-\d\dT[\d:.]+Z\] WARN: disk nearly full /);
    expect(lines[0]).toContain('"free":3');
    expect(lines[0]).toContain('"err":"ENOSPC soon"');
    expect(lines[0]).toContain('[redacted]');
  });

  it('silentLogger drops everything', () => {
    expect(() => silentLogger.child({ a: 1 }).error('nothing', { b: 2 })).not.toThrow();
    expect(silentLogger.enabled?.('error')).toBe(false);
  });
});

describe('trace ids', () => {
  const manager = new AsyncLocalStorageContextManager();
  beforeAll(() => {
    manager.enable();
    context.setGlobalContextManager(manager);
  });
  afterAll(() => {
    context.disable();
  });

  it('adds trace_id and span_id inside an active span, and nothing outside one', async () => {
    const { logger, records } = capture();
    const traceId = '0af7651916cd43dd8448eb211c80319c';
    const spanId = 'b7ad6b7169203331';
    const span = trace.wrapSpanContext({ traceId, spanId, traceFlags: 1 });
    logger.info('outside');
    await context.with(trace.setSpan(context.active(), span), async () => {
      logger.info('inside');
      await Promise.resolve();
      logger.child({ task_id: 't1' }).info('inside, after an await', { trace_id: 'the call wins' });
    });
    const invalid = trace.wrapSpanContext({ traceId: '0'.repeat(32), spanId: '0'.repeat(16), traceFlags: 0 });
    context.with(trace.setSpan(context.active(), invalid), () => logger.info('invalid span'));
    const [outside, inside, after, bad] = records();
    expect(outside).not.toHaveProperty('trace_id');
    expect(inside).toMatchObject({ trace_id: traceId, span_id: spanId });
    expect(after).toMatchObject({ trace_id: 'the call wins', span_id: spanId, task_id: 't1' });
    expect(bad).not.toHaveProperty('trace_id');
    expect(bad).not.toHaveProperty('span_id');
    logger.info('outside again');
    expect(records()[4]).not.toHaveProperty('span_id');
  });
});
