/**
 * Strict input on POST /tasks: invalid UTF-8, a charset other than UTF-8, lone surrogates,
 * unknown input keys and an aborted upload are refused, and nothing is stored or published.
 */
import { describe, expect, it } from 'vitest';
import { MemoryBroker } from '../common/broker/memory.ts';
import { createLogger } from '../common/logger.ts';
import { MemoryTaskStore } from '../common/store/memory.ts';
import { defaultRegistry } from '../worker/task-types.ts';
import { createApp } from './app.ts';

const TOPIC = 'requests';
const JSON_TYPE = { 'content-type': 'application/json' };

interface ErrorJson {
  error: { code: string; message: string; issues?: { path: string; message: string }[] };
}

function setup() {
  const store = new MemoryTaskStore();
  const broker = new MemoryBroker();
  const published: string[] = [];
  void broker.subscribe(TOPIC, 'spy', (d) => {
    published.push(d.key);
    return Promise.resolve();
  });
  const logs: { level: string; msg: string }[] = [];
  const logger = createLogger({ level: 'debug', format: 'json', write: (line) => logs.push(JSON.parse(line) as { level: string; msg: string }) });
  const app = createApp({
    store,
    broker,
    registry: defaultRegistry(),
    logger,
    options: { requestTopic: TOPIC, bodyLimit: 1024 * 1024, requestTimeoutMs: 200, relayAfterMs: 5000, maxAttempts: 3 },
  });
  const post = (body: RequestInit['body'], headers: Record<string, string> = JSON_TYPE, init: RequestInit = {}) =>
    app.request('http://localhost/tasks', { method: 'POST', body, headers, ...init });
  /** Nothing stored, nothing in the outbox, nothing published. */
  const nothingWritten = async () => {
    expect((await store.list({ limit: 100 })).tasks).toEqual([]);
    expect(await store.outboxDue(10, 0)).toEqual([]);
    expect(published).toEqual([]);
  };
  return { app, store, post, logs, published, nothingWritten };
}

const bytes = (...parts: (string | number[])[]) => Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p, 'utf8') : Buffer.from(p))));
/** With a Content-Length (node-server's direct read) and without (the counted stream). */
const framings: [string, (b: Buffer) => Record<string, string>][] = [
  ['with a Content-Length', (b) => ({ ...JSON_TYPE, 'content-length': String(b.byteLength) })],
  ['chunked', () => JSON_TYPE],
];

async function expectRefused(res: Response, status: number, code: string, path?: string): Promise<ErrorJson> {
  expect(res.status).toBe(status);
  const json = (await res.json()) as ErrorJson;
  expect(json.error.code).toBe(code);
  if (path !== undefined) {
    expect(json.error.issues?.map((i) => i.path)).toEqual([path]);
    expect(json.error.message.startsWith(`${path || 'body'}: `)).toBe(true);
  }
  return json;
}

describe('invalid UTF-8', () => {
  const prefix = '{"user_id":"u","content":"';
  const cases: [string, Buffer, number][] = [
    ['a Latin-1 byte in content', bytes(prefix, 'caf', [0xe9], '"}'), prefix.length + 3],
    ['a lone continuation byte in content', bytes(prefix, [0x80], '"}'), prefix.length],
    ['an overlong "/"', bytes(prefix, [0xc0, 0xaf], '"}'), prefix.length],
    ['a UTF-8-encoded surrogate', bytes(prefix, 'ok ', [0xed, 0xa0, 0x80], '"}'), prefix.length + 3],
    ['a code point past U+10FFFF', bytes(prefix, [0xf4, 0x90, 0x80, 0x80], '"}'), prefix.length],
    ['a sequence cut short', bytes(prefix, '键', [0xe7, 0x9b], '"}'), prefix.length + 3],
    ['a bad byte in user_id', bytes('{"user_id":"u', [0xff], '","content":"x"}'), 13],
    ['a truncated sequence at the very end', bytes(prefix, 'x"}', [0xe6, 0x9c]), prefix.length + 3],
  ];
  for (const [framing, headers] of framings) {
    for (const [what, body, offset] of cases) {
      it(`refuses ${what} (${framing}) with 400 naming the body and the byte offset, and stores nothing`, async () => {
        const { post, nothingWritten } = setup();
        const json = await expectRefused(await post(body, headers(body)), 400, 'validation_failed', '');
        expect(json.error.message).toBe(`body: not valid UTF-8 (byte offset ${offset})`);
        await nothingWritten();
      });
    }
    it(`accepts valid multi-byte UTF-8 (${framing}) unchanged`, async () => {
      const { post, store } = setup();
      const body = bytes('{"user_id":"用户","content":"机械键盘降价了 😀 café"}');
      const res = await post(body, headers(body));
      expect(res.status).toBe(202);
      const { task_id } = (await res.json()) as { task_id: string };
      expect(await store.get(task_id)).toMatchObject({ userId: '用户', input: { content: '机械键盘降价了 😀 café' } });
    });
  }
});

describe('charset', () => {
  const body = JSON.stringify({ user_id: 'u', content: 'x' });
  for (const type of [
    'application/json; charset=iso-8859-1',
    'application/json; charset=latin1',
    'application/json; charset=utf-16',
    'application/json;charset=UTF-16LE',
    'application/json; charset="utf-16"',
    'application/json; charset=',
    'application/json; charset=utf-8; charset=iso-8859-1',
  ]) {
    it(`refuses ${type} with 415, and stores nothing`, async () => {
      const { post, nothingWritten } = setup();
      const json = await expectRefused(await post(body, { 'content-type': type }), 415, 'unsupported_media_type');
      expect(json.error.message).toContain(type);
      expect(json.error.message).toMatch(/^content-type must be application\/json in UTF-8 \(charset utf-8 or none\), got /);
      await nothingWritten();
    });
  }
  for (const type of [
    'application/json',
    'application/json; charset=utf-8',
    'application/json;charset=UTF-8',
    'application/json; charset="utf-8"',
    'application/json; charset=utf8',
    'application/json; foo=bar; charset=Utf-8 ',
  ]) {
    it(`accepts ${type}`, async () => {
      const { post } = setup();
      expect((await post(body, { 'content-type': type })).status).toBe(202);
    });
  }
});

describe('lone surrogates', () => {
  const cases: [string, string, string, string][] = [
    ['a high surrogate in content', String.raw`{"user_id":"u","content":"a\ud800b"}`, 'content', String.raw`\ud800`],
    ['a low surrogate at the end of user_id', String.raw`{"user_id":"u\uDC00","content":"x"}`, 'user_id', String.raw`\udc00`],
    ['two high surrogates', String.raw`{"type":"agent","input":{"content":"\ud83d\ud83d"}}`, 'input.content', String.raw`\ud83d`],
    ['a surrogate in a key of input', String.raw`{"type":"agent","input":{"content":"x","k\ud800":1}}`, String.raw`input.k\ud800`, String.raw`\ud800`],
    ['a surrogate in a top-level key', String.raw`{"user_id":"u","content":"x","\udfff":1}`, String.raw`\udfff`, String.raw`\udfff`],
    ['a surrogate deep in an array', String.raw`{"type":"agent","input":{"content":"x","list":[1,["ok","\ud800"]]}}`, 'input.list.1.1', String.raw`\ud800`],
  ];
  for (const [what, body, path, unit] of cases) {
    it(`refuses ${what} with 400 naming ${path}, and stores nothing`, async () => {
      const { post, nothingWritten } = setup();
      const res = await post(body);
      const text = await res.clone().text();
      // The answer holds no surrogate escape a strict parser would refuse (`\\\\ud800` is a backslash and text).
      expect(text.replaceAll('\\\\', '')).not.toMatch(/\\u[dD][89a-fA-F]/);
      const json = await expectRefused(res, 400, 'validation_failed', path);
      expect(json.error.message).toContain(`must not contain a lone surrogate (${unit})`);
      await nothingWritten();
    });
  }

  it('accepts an escaped surrogate pair and stores the character', async () => {
    const { post, store } = setup();
    const res = await post(String.raw`{"user_id":"u","content":"smile \ud83d\ude00 \\ud800"}`);
    expect(res.status).toBe(202);
    const { task_id } = (await res.json()) as { task_id: string };
    expect(await store.get(task_id)).toMatchObject({ input: { content: 'smile 😀 \\ud800' } });
  });

  it('walks deep nesting without overflowing the stack', async () => {
    const { post, nothingWritten } = setup();
    const depth = 200_000;
    const res = await post(`{"type":"agent","input":{"content":"x","n":${'['.repeat(depth)}"\\ud800"${']'.repeat(depth)}}}`);
    const json = (await res.json()) as ErrorJson;
    expect(res.status).toBe(400);
    // V8's JSON.parse does not recurse, so the walk must not either; the path keeps its two ends.
    expect(json.error.issues?.[0]?.path).toBe(['input', 'n', ...Array<string>(30).fill('0'), '…', ...Array<string>(16).fill('0')].join('.'));
    expect(json.error.message).toContain('must not contain a lone surrogate (\\ud800)');
    await nothingWritten();
  });
});

describe('unknown keys in the agent input', () => {
  it('refuses an unknown key with 400 naming it, and stores nothing', async () => {
    const { post, nothingWritten } = setup();
    const json = await expectRefused(
      await post(JSON.stringify({ type: 'agent', input: { content: 'x', temperature: 0.2 } })),
      400,
      'validation_failed',
      'input.temperature',
    );
    expect(json.error.message).toContain('temperature');
    await nothingWritten();
  });
});

describe('an aborted upload', () => {
  /** A body that sends a few bytes of a promised 100 000, then fails as node-server's does. */
  function abortedUpload(err: Error, abort: AbortController | undefined) {
    const stream = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new TextEncoder().encode('{"user_id":"u","con'));
      },
      pull(controller) {
        abort?.abort(String(err));
        controller.error(err);
      },
    });
    return { body: stream, init: { duplex: 'half', ...(abort ? { signal: abort.signal } : {}) } as RequestInit };
  }
  const connReset = () => Object.assign(new Error('aborted'), { code: 'ECONNRESET' });

  for (const [framing, headers] of [
    ['with a Content-Length', { ...JSON_TYPE, 'content-length': '100000' }],
    ['chunked', JSON_TYPE],
  ] as const) {
    it(`is a client_aborted 400 logged at debug, not a 500 logged at error (${framing})`, async () => {
      const { post, logs, nothingWritten } = setup();
      const { body, init } = abortedUpload(connReset(), new AbortController());
      await expectRefused(await post(body, headers, init), 400, 'client_aborted');
      expect(logs.filter((l) => l.level === 'error')).toEqual([]);
      expect(logs).toContainEqual(expect.objectContaining({ level: 'debug', msg: 'client went away before its request was read' }));
      await nothingWritten();
    });
  }

  it('is recognised by the error code even before the signal aborts', async () => {
    const { post, logs } = setup();
    const { body, init } = abortedUpload(connReset(), undefined);
    await expectRefused(await post(body, JSON_TYPE, init), 400, 'client_aborted');
    expect(logs.filter((l) => l.level === 'error')).toEqual([]);
  });

  it('leaves another failure of the read a 500 logged at error', async () => {
    const { post, logs } = setup();
    const { body, init } = abortedUpload(new TypeError('Body is unusable'), undefined);
    expect((await post(body, JSON_TYPE, init)).status).toBe(500);
    expect(logs).toContainEqual(expect.objectContaining({ level: 'error', msg: 'request failed' }));
  });
});
