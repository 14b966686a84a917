/**
 * 5,000 random malformed requests against a running API process: every answer is a 4xx,
 * the process stays up, and no Redis key is created for any of them. Among them: bytes that
 * are not UTF-8, other charsets, lone surrogates, unknown input keys, and uploads the client
 * abandons halfway (no answer to read; they must not be logged as failures). The API runs
 * with AUTH=keys: requests carry a valid key unless they try a bad Authorization header (no
 * key, garbage, a huge one, a revoked one, another tenant's on this tenant's task) or the
 * admin and quota routes with bad input. The later routes too: workflows (cycles, unknown
 * needs, too many steps), schedules, reruns, dead letters and their redrive, with the same
 * strict-input cases, malformed ids, and malformed or huge Idempotency-Key headers; those
 * kinds also name the status and the field or header the error message must name.
 */
import { randomUUID } from 'node:crypto';
import { connect } from 'node:net';
import { createClient } from 'redis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { killAll, startApi, type Child } from '../support/processes.ts';
import { newApiKey } from '../../common/api-keys.ts';
import { makeKeys } from '../../common/keys.ts';
import type { Scope } from '../../common/store/port.ts';
import { isolatedRun, redisStore, services } from '../support/services.ts';

const REQUESTS = 5000;
const BODY_LIMIT = 64 * 1024;

/** mulberry32: a small seeded PRNG, so a failing run can be replayed with FUZZ_SEED. */
function prng(seed: number) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface FuzzRequest {
  kind: string;
  method: string;
  path: string;
  headers: Record<string, string>;
  body?: string | Uint8Array;
  /** Send the headers and part of the body, then close the connection: there is no answer. */
  abort?: boolean;
  /** Written to a socket as it is (fetch refuses control characters in a header). */
  raw?: boolean;
  /**
   * The answer due: its status, and what its error message names (the field, header or
   * parameter at fault); no message when Node's HTTP parser refuses the request itself.
   */
  expect?: { status: number; message?: RegExp };
}

/** Byte sequences that are not UTF-8: Latin-1 é, stray continuation, overlong, encoded surrogate, past U+10FFFF, cut short, 0xff. */
const NOT_UTF8 = [[0xe9], [0x80], [0xc0, 0xaf], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xe6, 0x9c], [0xff], [0xfe, 0xff]];
const OTHER_CHARSETS = ['iso-8859-1', 'latin1', 'windows-1252', 'utf-16', 'UTF-16LE', '"utf-16"', 'us-ascii', 'gbk'];

const show = (body: string | Uint8Array | undefined) =>
  typeof body === 'string' || body === undefined ? (body ?? '').slice(0, 80) : `0x${Buffer.from(body).toString('hex').slice(0, 80)}`;

/** Writes the request head and the first bytes of a longer body, then destroys the socket. */
function abandonUpload(url: string, r: FuzzRequest, rand: () => number): Promise<void> {
  const { hostname, port } = new URL(url);
  const body = Buffer.from(typeof r.body === 'string' ? r.body : (r.body ?? []));
  const chunked = rand() < 0.3;
  const head = [`${r.method} ${r.path} HTTP/1.1`, `Host: ${hostname}:${port}`, ...Object.entries(r.headers).map(([k, v]) => `${k}: ${v}`)];
  head.push(chunked ? 'Transfer-Encoding: chunked' : `Content-Length: ${body.byteLength + 100_000}`);
  const part = body.subarray(0, Math.floor(rand() * body.byteLength));
  return new Promise((resolve) => {
    const socket = connect(Number(port), hostname, () => {
      socket.write(`${head.join('\r\n')}\r\n\r\n`);
      if (part.byteLength > 0) socket.write(chunked ? Buffer.concat([Buffer.from(`${part.byteLength.toString(16)}\r\n`), part, Buffer.from('\r\n')]) : part);
      // Sometimes at once, sometimes once the server has started reading.
      setTimeout(() => socket.destroy(), Math.floor(rand() * 30));
    });
    socket.on('error', () => undefined);
    socket.on('close', () => resolve());
  });
}

/** Sends the request over a socket of its own, byte for byte; answers the status and the body. */
function rawRequest(url: string, r: FuzzRequest): Promise<{ status: number; text: string }> {
  const { hostname, port } = new URL(url);
  const body = Buffer.from(typeof r.body === 'string' ? r.body : (r.body ?? []));
  const head = [`${r.method} ${r.path} HTTP/1.1`, `Host: ${hostname}:${port}`, 'Connection: close', `Content-Length: ${body.byteLength}`];
  head.push(...Object.entries(r.headers).map(([k, v]) => `${k}: ${v}`));
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const socket = connect(Number(port), hostname, () => socket.end(Buffer.concat([Buffer.from(`${head.join('\r\n')}\r\n\r\n`, 'latin1'), body])));
    socket.on('data', (b: Buffer) => chunks.push(b));
    socket.on('error', reject);
    socket.on('close', () => {
      const answer = Buffer.concat(chunks).toString('utf8');
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(answer)?.[1] ?? 0);
      resolve({ status, text: answer.slice(answer.indexOf('\r\n\r\n') + 4) });
    });
  });
}

interface FuzzKeys {
  /** tasks:write and tasks:read of tenant fuzz. */
  valid: string;
  /** admin of tenant ops. */
  admin: string;
  revoked: string;
  /** Another tenant's key, and a task of tenant fuzz it must not see. */
  other: string;
  fuzzTask: string;
  /** A dead letter of tenant fuzz (failed): a redrive or rerun that got through would change it. */
  fuzzDead: string;
}

function generator(rand: () => number, keys: FuzzKeys) {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)] as T;
  const int = (n: number) => Math.floor(rand() * n);
  // Any code point but the surrogates (a lone surrogate cannot be put in a URL at all).
  const junk = (n: number) =>
    Array.from({ length: n }, () => {
      const c = int(0xffff - 0x800);
      return String.fromCharCode(c < 0xd800 ? c : c + 0x800);
    }).join('');
  const json = { 'content-type': 'application/json' };
  const wrongValues: unknown[] = [42, -1.5, true, null, [], ['x'], {}, { a: 1 }, '', 1e308];
  const valid = () => ({ user_id: `u${int(100)}`, content: `text ${int(1000)}` });
  const bytes = (...parts: (string | number[])[]) => Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p) : Buffer.from(p))));
  // A lone high or low surrogate: JSON.stringify writes it as a `\\udXXX` escape.
  const lone = () => String.fromCharCode(pick([0xd800, 0xdbff, 0xdc00, 0xdfff, 0xd800 + int(0x800)]));

  const bearer = (k: string) => ({ authorization: `Bearer ${k}` });
  const authKinds: (() => FuzzRequest)[] = [
    () => ({
      kind: 'bad Authorization',
      method: 'POST',
      path: pick(['/tasks', `/tasks/${randomUUID()}`, '/quota', '/admin/keys']),
      headers: {
        ...json,
        ...pick<Record<string, string>>([
          {},
          { authorization: '' },
          { authorization: 'Bearer' },
          // Any byte fetch lets a header carry: visible ASCII and Latin-1 (not DEL or controls).
          {
            authorization: `Bearer ${Array.from({ length: 1 + int(40) }, () => String.fromCharCode(pick([0x21 + int(0x7f - 0x21), 0xa0 + int(0x60)]))).join('')}`,
          },
          { authorization: `Bearer atq_${'A'.repeat(int(80))}` },
          { authorization: `Bearer ${'x'.repeat(200 + int(6000))}` },
          { authorization: `Basic ${Buffer.from('user:pass').toString('base64')}` },
          { authorization: `bearer  ${keys.valid}` },
          bearer(keys.revoked),
        ]),
      },
      body: JSON.stringify(valid()),
    }),
    () => ({
      kind: "another tenant's key",
      method: pick(['GET', 'DELETE']),
      path: pick([`/tasks/${keys.fuzzTask}`, `/tasks/${keys.fuzzTask}/events`, `/tasks/${keys.fuzzTask}?wait=1`, `/tasks/${keys.fuzzTask}?history=true`]),
      headers: bearer(keys.other),
    }),
    () => ({
      kind: "another tenant's key: retry",
      method: 'POST',
      path: `/tasks/${pick([keys.fuzzTask, keys.fuzzDead])}/retry`,
      headers: bearer(keys.other),
      expect: { status: 404, message: /^no task / },
    }),
    () =>
      rand() < 0.5
        ? { kind: 'admin route without admin', method: 'GET', path: '/admin/keys', headers: bearer(keys.valid) }
        : { kind: 'admin route without admin', method: 'POST', path: '/admin/keys', headers: { ...json, ...bearer(keys.valid) }, body: '{}' },
    () => ({
      kind: 'bad admin body',
      method: 'POST',
      path: '/admin/keys',
      headers: { ...json, ...bearer(keys.admin) },
      body: pick([
        '',
        junk(20),
        JSON.stringify({ tenant: pick(['', 'UPPER', 'a'.repeat(80), junk(5), 42]), scopes: ['tasks:read'] }),
        JSON.stringify({ tenant: 'acme', scopes: pick([[], ['root'], 'tasks:read', [42], null]) }),
        JSON.stringify({ tenant: 'acme', scopes: ['tasks:read'], extra: 1 }),
      ]),
    }),
    () => ({
      kind: 'bad tenant limits',
      method: 'PUT',
      path: `/admin/tenants/${pick(['acme', 'UPPER', encodeURIComponent(junk(5)), 'a'.repeat(80)])}/limits`,
      headers: { ...json, ...bearer(keys.admin) },
      body: JSON.stringify(pick([{ quota_units: -1 }, { max_running: 1.5 }, { submits_per_s: 'fast' }, { quota_window_seconds: 0 }, { nope: 1 }, [1]])),
    }),
    () => ({
      kind: 'revoke unknown key',
      method: 'DELETE',
      path: `/admin/keys/${pick(['key_000000000000', 'nope', encodeURIComponent(junk(8))])}`,
      headers: bearer(keys.admin),
    }),
    () => ({ kind: 'wrong method: quota', method: pick(['POST', 'PUT', 'DELETE', 'PATCH']), path: '/quota', headers: bearer(keys.valid) }),
  ];

  const kinds: (() => FuzzRequest)[] = [
    () => {
      const s = JSON.stringify(valid());
      return { kind: 'truncated json', method: 'POST', path: '/tasks', headers: json, body: s.slice(0, 1 + int(s.length - 2)) };
    },
    () => ({ kind: 'random bytes', method: 'POST', path: '/tasks', headers: json, body: junk(1 + int(200)) }),
    () => ({ kind: 'wrong type: content', method: 'POST', path: '/tasks', headers: json, body: JSON.stringify({ ...valid(), content: pick(wrongValues) }) }),
    () => ({
      kind: 'wrong type: user_id',
      method: 'POST',
      path: '/tasks',
      headers: json,
      body: JSON.stringify({ ...valid(), user_id: pick(wrongValues.filter((v) => typeof v !== 'string' || v === '')) }),
    }),
    () => ({ kind: 'wrong type: body', method: 'POST', path: '/tasks', headers: json, body: JSON.stringify(pick([1, 'x', null, true, [valid()]])) }),
    () => ({
      kind: 'wrong type: input',
      method: 'POST',
      path: '/tasks',
      headers: json,
      body: JSON.stringify({ type: 'agent', input: pick([1, 'x', null, [], { content: 5 }]) }),
    }),
    () => ({
      kind: 'unknown type',
      method: 'POST',
      path: '/tasks',
      headers: json,
      body: JSON.stringify({ type: pick(['nope', 'AGENT', '../x', '', 7]), input: { content: 'x' } }),
    }),
    () => ({
      kind: 'bad priority',
      method: 'POST',
      path: '/tasks',
      headers: json,
      body: JSON.stringify({ type: 'agent', input: { content: 'x' }, priority: pick(['urgent', 1, null, '']) }),
    }),
    () => ({
      kind: 'unknown field',
      method: 'POST',
      path: '/tasks',
      headers: json,
      body: JSON.stringify({ ...valid(), [pick(['admin', '__proto__x', 'task_id', 'status', junk(5)])]: 1 }),
    }),
    () => ({
      kind: 'huge string',
      method: 'POST',
      path: '/tasks',
      headers: json,
      body: JSON.stringify({ ...valid(), content: 'x'.repeat(BODY_LIMIT + int(BODY_LIMIT)) }),
    }),
    () => ({ kind: 'huge user_id', method: 'POST', path: '/tasks', headers: json, body: JSON.stringify({ ...valid(), user_id: 'u'.repeat(257 + int(5000)) }) }),
    () => {
      const depth = 100 + int(5000);
      return {
        kind: 'deep nesting',
        method: 'POST',
        path: '/tasks',
        headers: json,
        body: `{"user_id":"u","content":${'['.repeat(depth)}${']'.repeat(depth)}}`,
      };
    },
    () => ({ kind: 'empty body', method: 'POST', path: '/tasks', headers: json, body: pick(['', ' ', '\n']) }),
    () => ({
      kind: 'wrong content type',
      method: 'POST',
      path: '/tasks',
      headers: { 'content-type': pick(['text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/jsonx']) },
      body: JSON.stringify(valid()),
    }),
    () => ({ kind: 'no content type', method: 'POST', path: '/tasks', headers: {}, body: JSON.stringify(valid()) }),
    () => ({
      kind: 'invalid id',
      method: 'GET',
      path: `/tasks/${encodeURIComponent(pick([junk(1 + int(40)), 'abc', '0', randomUUID().slice(0, 35), `${randomUUID()}x`, '%00', '..']))}`,
      headers: {},
    }),
    () => ({
      kind: 'wrong method',
      method: pick(['PUT', 'PATCH']),
      path: pick(['/tasks', `/tasks/${randomUUID()}`, `/tasks/${randomUUID()}/events`]),
      headers: json,
      body: JSON.stringify(valid()),
    }),
    () => ({
      kind: 'bad list query',
      method: 'GET',
      path: `/tasks?${pick(['limit=0', 'limit=abc', 'limit=1000', 'status=finished', 'cursor=zzzz', `cursor=${encodeURIComponent(junk(8))}`, 'user_id=', 'type=AGENT'])}`,
      headers: {},
    }),
    () => {
      const wait = pick(['-1', 'abc', '100000', 'NaN', '1e9']);
      return rand() < 0.5
        ? { kind: 'bad wait', method: 'POST', path: `/tasks?wait=${wait}`, headers: json, body: JSON.stringify(valid()) }
        : { kind: 'bad wait', method: 'GET', path: `/tasks/${randomUUID()}?wait=${wait}`, headers: {} };
    },
    () => ({
      kind: 'bad Last-Event-ID',
      method: 'GET',
      path: `/tasks/${randomUUID()}/events`,
      headers: { 'last-event-id': pick(['x', '1', '-1-1', '1-2-3', '99999999999999999-0', 'abc-def']) },
    }),
    () => ({ kind: 'cancel unknown or invalid', method: 'DELETE', path: `/tasks/${pick([randomUUID(), 'abc', encodeURIComponent(junk(10))])}`, headers: {} }),
    () => ({ kind: 'unknown route', method: pick(['GET', 'POST']), path: pick(['/', '/task', '/tasks/a/b', `/${junk(3)}`]), headers: json, body: undefined }),
    () => ({
      kind: 'not UTF-8: content',
      method: 'POST',
      path: '/tasks',
      headers: json,
      body: bytes(`{"user_id":"u${int(100)}","content":"text `, pick(NOT_UTF8), rand() < 0.5 ? ' more"}' : '"}'),
    }),
    () => ({ kind: 'not UTF-8: user_id', method: 'POST', path: '/tasks', headers: json, body: bytes('{"user_id":"u', pick(NOT_UTF8), '","content":"x"}') }),
    () => {
      const charset = pick(OTHER_CHARSETS);
      const text = JSON.stringify({ ...valid(), content: 'café' });
      return {
        kind: 'other charset',
        method: 'POST',
        path: '/tasks',
        headers: { 'content-type': `application/json; charset=${charset}` },
        body: /16/.test(charset) ? Buffer.from(text, 'utf16le') : rand() < 0.5 ? Buffer.from(text, 'latin1') : text,
      };
    },
    () => ({
      kind: 'lone surrogate: value',
      method: 'POST',
      path: '/tasks',
      headers: json,
      body: JSON.stringify(
        pick([
          { ...valid(), content: `a${lone()}b` },
          { ...valid(), user_id: `u${lone()}` },
          { type: 'agent', input: { content: `${junk(3)}${lone()}` } },
        ]),
      ),
    }),
    () => ({
      kind: 'lone surrogate: key',
      method: 'POST',
      path: '/tasks',
      headers: json,
      body: JSON.stringify(
        pick([
          { ...valid(), [`k${lone()}`]: 1 },
          { type: 'agent', input: { content: 'x', [lone()]: 'v' } },
        ]),
      ),
    }),
    () => ({
      kind: 'unknown input key',
      method: 'POST',
      path: '/tasks',
      headers: json,
      body: JSON.stringify({ type: 'agent', input: { content: 'x', [pick(['temperature', 'model', 'Content', 'simulate', '__proto__x', `x${junk(4)}`])]: 1 } }),
    }),
    () => ({ kind: 'aborted upload', method: 'POST', path: '/tasks', headers: json, body: JSON.stringify(valid()), abort: true }),
    ...laterRoutes(),
  ];

  /** POST /workflows, /schedules and /dead-letters/redrive, reruns, and the ids and Idempotency-Key they read: each with the answer due. */
  function laterRoutes(): (() => FuzzRequest)[] {
    const step = (id: string, needs: string[] = [], content = 'x') => ({ id, type: 'agent', input: { content }, needs });
    const schedule = (over: Record<string, unknown> = {}) => ({ cron: '0 3 1 1 *', task: { type: 'agent', input: { content: 'x' } }, ...over });
    const uuids = (n: number) => Array.from({ length: n }, () => randomUUID());
    const malformedId = () =>
      encodeURIComponent(pick([junk(1 + int(40)), 'abc', '0', randomUUID().slice(0, 35), `${randomUUID()}x`, '%00', 'sch_', `sch_${'0'.repeat(23)}g`]));
    const post = (kind: string, path: string, body: unknown, status: number, message: RegExp): FuzzRequest => ({
      kind,
      method: 'POST',
      path,
      headers: json,
      body: JSON.stringify(body),
      expect: { status, message },
    });
    /**
     * The strict-input cases of a valid JSON body (with an `"x"` value; a `name` too when the
     * body may have one), on `path`: bytes that are not UTF-8, a lone surrogate, another charset.
     */
    const strictInput = (what: string, path: string, valid: () => Record<string, unknown>, named: boolean): (() => FuzzRequest)[] => [
      () => {
        const text = JSON.stringify(valid());
        const at = text.indexOf('"x"') + 1;
        return {
          kind: `${what}: not UTF-8`,
          method: 'POST',
          path,
          headers: json,
          body: bytes(text.slice(0, at), pick(NOT_UTF8), text.slice(at)),
          expect: { status: 400, message: /^body: not valid UTF-8/ },
        };
      },
      () => ({
        kind: `${what}: lone surrogate`,
        method: 'POST',
        path,
        headers: json,
        body: JSON.stringify(
          named && rand() < 0.5 ? { ...valid(), name: `n${lone()}` } : JSON.parse(JSON.stringify(valid()).replace('"x"', JSON.stringify(`x${lone()}`))),
        ),
        expect: { status: 400, message: /must not contain a lone surrogate/ },
      }),
      () => {
        const charset = pick(OTHER_CHARSETS);
        const text = JSON.stringify(named ? { ...valid(), name: 'café' } : valid());
        return {
          kind: `${what}: other charset`,
          method: 'POST',
          path,
          headers: { 'content-type': `application/json; charset=${charset}` },
          body: /16/.test(charset) ? Buffer.from(text, 'utf16le') : Buffer.from(text, 'latin1'),
          expect: { status: 415, message: /^content-type must be application\/json/ },
        };
      },
    ];
    const workflow = (steps: unknown) => ({ name: 'fuzz', steps });
    /** zod's refusal of an unknown key names it: `task.run_at: Unrecognized key: "run_at"` (POST /workflows: `body: …`). */
    const unknownKey = (key: string, under = '') => new RegExp(`^(${under.replace('.', '\\.')}${key}|body): Unrecognized key: "${key}"`);
    return [
      // POST /workflows
      () => {
        const n = 2 + int(5);
        const steps = Array.from({ length: n }, (_, i) => step(`s${i}`, [`s${(i + 1) % n}`]));
        return post('workflow: cycle', '/workflows', workflow(steps), 400, /^steps: the needs form a cycle among /);
      },
      () =>
        post(
          'workflow: unknown need',
          '/workflows',
          workflow([step('a'), step('b', ['a', pick(['c', 'A', 'nope', 'a-'])])]),
          400,
          /^steps\.1\.needs\.1: no step "/,
        ),
      () => post('workflow: needs itself', '/workflows', workflow([step('a'), step('b', ['b'])]), 400, /^steps\.1\.needs\.0: a step cannot need itself/),
      () => post('workflow: step id twice', '/workflows', workflow([step('a'), step('a')]), 400, /^steps\.1\.id: step id "a" is used twice/),
      () => {
        const steps = Array.from({ length: 101 + int(300) }, (_, i) => step(`s${i}`));
        return post('workflow: too many steps', '/workflows', workflow(steps), 400, /^steps: at most 100 steps/);
      },
      () => {
        const needs = Array.from({ length: 101 + int(200) }, () => 'a');
        return post('workflow: too many needs', '/workflows', workflow([step('a'), step('b', needs)]), 400, /^steps\.1\.needs: /);
      },
      () => {
        const extra = pick(['admin', 'tenant', 'id', 'next_run_at', 'all', 'force']);
        const [body, message] = pick<[unknown, RegExp]>([
          [workflow([]), /^steps: at least one step/],
          [workflow(pick(wrongValues.filter((v) => !Array.isArray(v)))), /^steps: /],
          [workflow([{ ...step('a'), type: pick(['nope', 'AGENT', '../x']) }]), /^steps\.0\.type: /],
          [workflow([{ ...step('a'), input: pick([{ content: 5 }, { content: 'x', model: 'y' }, 'x']) }]), /^steps\.0\.input/],
          [workflow([{ ...step('a'), id: pick(['', '-a', 'a b', 'x'.repeat(64), junk(3)]) }]), /^steps\.0\.id: /],
          [workflow([{ ...step('a'), [pick(['after', 'status', 'task_id'])]: 1 }]), /^steps\.0: /],
          [{ ...workflow([step('a')]), [extra]: 1 }, unknownKey(extra)],
          [{ name: 'no steps' }, /^steps: /],
          [{ template: pick(['nope', 'seed_reportx']) }, /^template: unknown workflow template/],
          [pick([1, 'x', null, [step('a')]]), /^(body|): must be a JSON object/],
        ]);
        return post('workflow: bad body', '/workflows', body, 400, message);
      },
      ...strictInput('workflow', '/workflows', () => workflow([step('a'), step('b', ['a'])]), true),
      () => {
        const id = malformedId();
        const path = pick([`/workflows/${id}`, `/workflows/${id}/events`]);
        return {
          kind: 'workflow: malformed id',
          method: path.endsWith('/events') ? 'GET' : pick(['GET', 'DELETE']),
          path,
          headers: {},
          expect: { status: 400, message: /^id: must be a workflow id/ },
        };
      },
      () => ({
        kind: 'workflow: unknown id',
        method: pick(['GET', 'DELETE']),
        path: `/workflows/${randomUUID()}`,
        headers: {},
        expect: { status: 404, message: /^no workflow / },
      }),
      // POST /schedules
      () =>
        post(
          'schedule: bad cron',
          '/schedules',
          schedule({ cron: pick(['61 * * * *', 'nope', '* * * * * * * *', '0 0 30 2 *', '@never', 'x'.repeat(201)]) }),
          400,
          /^cron: /,
        ),
      () => post('schedule: bad cron type', '/schedules', schedule({ cron: pick(wrongValues) }), 400, /^cron: /),
      () => post('schedule: bad timezone', '/schedules', schedule({ timezone: pick(['Mars/Olympus', '', 'UTC+25', 'x'.repeat(65), 42]) }), 400, /^timezone: /),
      () => {
        const extra = pick(['tenant', 'run_at', 'id', 'next_run_at']);
        const [over, message] = pick<[Record<string, unknown>, RegExp]>([
          [{ task: { type: pick(['nope', 'AGENT']), input: { content: 'x' } } }, /^task\.type: /],
          [{ task: { type: 'agent', input: pick([{ content: 5 }, { content: 'x', model: 'y' }, 'x']) } }, /^task\.input/],
          [{ task: { type: 'agent' } }, /^task\.input: /],
          [{ task: { type: 'agent', input: { content: 'x' }, [extra]: 1 } }, unknownKey(extra, 'task.')],
          [{ task: { type: 'agent', input: { content: 'x' }, priority: pick(['urgent', 1]) } }, /^task\.priority: /],
          [{ task: pick(wrongValues.filter((v) => v === null || typeof v !== 'object' || Array.isArray(v))) }, /^task: /],
          [{ catch_up: pick(['some', 1, null]) }, /^catch_up: /],
          [{ paused: pick(['yes', 1, null]) }, /^paused: /],
          [{ name: pick(['', 'a\u0007b', 'n'.repeat(201)]) }, /^name: /],
          [{ [extra]: 1 }, unknownKey(extra)],
        ]);
        return post('schedule: bad body', '/schedules', schedule(over), 400, message);
      },
      ...strictInput('schedule', '/schedules', () => schedule(), true),
      () => {
        const id = malformedId();
        const [method, path] = pick([
          ['GET', `/schedules/${id}`],
          ['DELETE', `/schedules/${id}`],
          ['POST', `/schedules/${id}/pause`],
          ['POST', `/schedules/${id}/resume`],
        ] as const);
        return { kind: 'schedule: malformed id', method, path, headers: {}, expect: { status: 400, message: /^id: must be a schedule id/ } };
      },
      () => {
        const id = `sch_${randomUUID().replace(/-/g, '').slice(0, 24)}`;
        const [method, path] = pick([
          ['GET', `/schedules/${id}`],
          ['DELETE', `/schedules/${id}`],
          ['POST', `/schedules/${id}/pause`],
          ['POST', `/schedules/${id}/resume`],
        ] as const);
        return { kind: 'schedule: unknown id', method, path, headers: {}, expect: { status: 404, message: /^no schedule / } };
      },
      // Reruns and dead letters
      () => ({
        kind: 'retry: malformed id',
        method: 'POST',
        path: `/tasks/${malformedId()}/retry`,
        headers: {},
        expect: { status: 400, message: /^id: must be a task id/ },
      }),
      () => ({ kind: 'retry: unknown id', method: 'POST', path: `/tasks/${randomUUID()}/retry`, headers: {}, expect: { status: 404, message: /^no task / } }),
      // Its own task, but still queued: only a failed or cancelled one can be rerun.
      () => ({
        kind: 'retry: not retryable',
        method: 'POST',
        path: `/tasks/${keys.fuzzTask}/retry`,
        headers: {},
        expect: { status: 409, message: /only failed or cancelled tasks can be rerun/ },
      }),
      () => {
        const extra = pick(['admin', 'tenant', 'id', 'next_run_at', 'all', 'force']);
        const [body, message] = pick<[unknown, RegExp]>([
          [{ task_ids: pick(['x', 1, null, {}]) }, /^task_ids: /],
          [{ task_ids: [] }, /^task_ids: /],
          [{ task_ids: [keys.fuzzDead, pick(['nope', '', 42, junk(5), `${randomUUID()}x`])] }, /^task_ids\.1: /],
          [{ task_ids: uuids(1001) }, /^task_ids: /],
          [{ limit: pick([0, 1001, 1.5, -1, '10', null]) }, /^limit: /],
          [{ type: pick(['BAD TYPE', '', 7, 'x'.repeat(65)]) }, /^type: /],
          [{ code: pick(['bad code!', '', 7, 'x'.repeat(65)]) }, /^code: /],
          [{ task_ids: [keys.fuzzDead], [extra]: true }, unknownKey(extra)],
          [pick([[keys.fuzzDead], 'x', 1, null]), /^(body|): /],
        ]);
        return post('redrive: bad body', '/dead-letters/redrive', body, 400, message);
      },
      ...strictInput('redrive', '/dead-letters/redrive', () => ({ code: 'x' }), false),
      () => {
        const [q, message] = pick<[string, RegExp]>([
          [`limit=${pick(['0', 'abc', '101', '-1'])}`, /^limit: /],
          [`type=${pick(['BAD', '%20', 'x'.repeat(65)])}`, /^type: /],
          [`code=${pick(['bad!', '%00', 'x'.repeat(65)])}`, /^code: /],
          [`cursor=${pick(['zzzz', encodeURIComponent(junk(8)), 'x'.repeat(201)])}`, /^cursor: /],
        ]);
        return { kind: 'dead letters: bad query', method: 'GET', path: `/dead-letters?${q}`, headers: {}, expect: { status: 400, message } };
      },
      // Idempotency-Key: too long, control characters, not ASCII (Latin-1, or UTF-8 bytes), empty, spaces; on POST /tasks or /workflows.
      () => ({
        kind: 'bad Idempotency-Key',
        method: 'POST',
        ...pick([
          { path: '/tasks', body: JSON.stringify(valid()) },
          { path: '/workflows', body: JSON.stringify(workflow([step('a'), step('b', ['a'])])) },
        ]),
        headers: {
          ...json,
          'idempotency-key': pick([
            'k'.repeat(256 + int(6000)),
            `k\tk${int(1000)}`,
            `clé-${int(1000)}`,
            Buffer.from(`键-${int(1000)}`).toString('latin1'),
            `\u00a0k${int(1000)}`,
            `two words ${int(1000)}`,
            '',
          ]),
        },
        expect: { status: 400, message: /^Idempotency-Key: / },
      }),
      // A control character other than a tab: fetch will not send it, and Node's HTTP parser refuses it before the app sees it.
      () => ({
        kind: 'Idempotency-Key with a control character',
        method: 'POST',
        path: '/tasks',
        headers: { ...json, 'idempotency-key': `k${String.fromCharCode(pick([0x00, 0x01, 0x08, 0x0b, 0x1b, 0x1f, 0x7f]))}k${int(1000)}` },
        body: JSON.stringify(valid()),
        raw: true,
        expect: { status: 400 },
      }),
    ];
  }
  // Most requests carry the valid key, so they reach the checks behind it.
  return () => {
    if (rand() < 0.2) return pick(authKinds)();
    const r = pick(kinds)();
    return { ...r, headers: { ...r.headers, ...bearer(keys.valid) } };
  };
}

describe('fuzzing the API with malformed requests', () => {
  const { prefix, env } = isolatedRun('fuzz', 'kafka', { API_BODY_LIMIT: String(BODY_LIMIT), LOG_LEVEL: 'warn', AUTH: 'keys' });
  let api: { child: Child; url: string };
  const redis = createClient({ socket: { host: services().REDIS_HOST, port: Number(services().REDIS_PORT) } });
  let keys: FuzzKeys;
  /** Keys of the test's own setup (API keys, the tasks of tenant fuzz), not written by the fuzzing. */
  let before: Set<string>;
  /** The setup's tasks as stored, and the dead letters of tenant fuzz: no request may change them. */
  let tasksBefore: Record<string, string>[];
  let deadBefore: string[];
  const redisKeys = makeKeys(prefix);
  const setupTasks = () => Promise.all([keys.fuzzTask, keys.fuzzDead].map((id) => redis.hGetAll(redisKeys.task(id))));
  const deadLetters = () => redis.zRange(redisKeys.dead('fuzz'), 0, -1);

  beforeAll(async () => {
    const store = await redisStore({ keyPrefix: prefix });
    const make = async (tenant: string, scopes: Scope[]) => {
      const { secret, hash, key } = newApiKey(tenant, scopes, 'fuzz');
      await store.createKey(key, hash);
      return { secret, id: key.id };
    };
    const valid = await make('fuzz', ['tasks:write', 'tasks:read']);
    const revoked = await make('fuzz', ['tasks:write', 'tasks:read']);
    await store.revokeKey(revoked.id);
    const fuzzTask = randomUUID();
    await store.create(
      { id: fuzzTask, tenant: 'fuzz', type: 'agent', input: { content: 'x' }, userId: null, priority: 'normal', maxAttempts: 1, createdAt: Date.now() },
      Date.now() + 3_600_000,
    );
    // A dead letter of tenant fuzz: claimed and failed for good.
    const fuzzDead = randomUUID();
    await store.create(
      { id: fuzzDead, tenant: 'fuzz', type: 'agent', input: { content: 'x' }, userId: null, priority: 'normal', maxAttempts: 1, createdAt: Date.now() },
      Date.now() + 3_600_000,
    );
    expect((await store.claim(fuzzDead, 'fuzz-setup', 60_000)).outcome).toBe('claimed');
    expect((await store.fail(fuzzDead, 'fuzz-setup', { code: 'fuzz_setup', message: 'failed for the test', retriable: false })).code).toBe('ok');
    keys = {
      valid: valid.secret,
      admin: (await make('ops', ['admin'])).secret,
      revoked: revoked.secret,
      other: (await make('rival', ['tasks:write', 'tasks:read'])).secret,
      fuzzTask,
      fuzzDead,
    };
    await store.close();
    api = await startApi(env);
    await redis.connect();
    before = new Set<string>();
    for await (const batch of redis.scanIterator({ MATCH: `${prefix}*`, COUNT: 1000 })) for (const k of batch) before.add(k);
    tasksBefore = await setupTasks();
    deadBefore = await deadLetters();
  });
  afterAll(async () => {
    await redis.close();
    await killAll();
  });

  it(`answers ${REQUESTS} malformed requests with 4xx only, stays up, and writes nothing`, async () => {
    const seed = Number(process.env.FUZZ_SEED ?? Date.now() % 2 ** 31);
    const rand = prng(seed);
    const next = generator(rand, keys);
    const byKind = new Map<string, Map<number, number>>();
    const bad: string[] = [];
    let sent = 0;
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        while (sent < REQUESTS) {
          sent++;
          const r = next();
          let status: number;
          if (r.abort) {
            await abandonUpload(api.url, r, rand);
            const counts = byKind.get(r.kind) ?? new Map<number, number>();
            counts.set(0, (counts.get(0) ?? 0) + 1);
            byKind.set(r.kind, counts);
            continue;
          }
          try {
            let text: string;
            if (r.raw) {
              ({ status, text } = await rawRequest(api.url, r));
            } else {
              const res = await fetch(`${api.url}${r.path}`, { method: r.method, headers: r.headers, body: r.body });
              status = res.status;
              text = await res.text();
            }
            if (r.expect) {
              let message = '';
              try {
                message = (JSON.parse(text) as { error: { message: string } }).error.message;
              } catch {
                // Not the API's error shape: the check below says so.
              }
              if (status !== r.expect.status || (r.expect.message ? !r.expect.message.test(message) : text !== ''))
                bad.push(
                  `${r.kind}: ${r.method} ${r.path.slice(0, 120)} body=${show(r.body)} -> ${status} ${text.slice(0, 200)} (expected ${r.expect.status} ${String(r.expect.message)})`,
                );
            }
          } catch (err) {
            // Only an over-limit body may be cut short by the server (413 before the upload ends).
            if (r.kind !== 'huge string') bad.push(`${r.kind}: ${r.method} ${r.path} -> ${String(err)}`);
            status = 413;
          }
          const counts = byKind.get(r.kind) ?? new Map<number, number>();
          counts.set(status, (counts.get(status) ?? 0) + 1);
          byKind.set(r.kind, counts);
          if (status < 400 || status >= 500) bad.push(`${r.kind}: ${r.method} ${r.path} body=${show(r.body)} -> ${status}`);
        }
      }),
    );
    const summary = [...byKind].map(([k, m]) => `${k} ${[...m].map(([s, n]) => `${s}x${n}`).join(',')}`).join('; ');
    process.stderr.write(`[fuzz] seed ${seed}: ${summary}\n`);
    expect(bad.slice(0, 10), `seed ${seed}`).toEqual([]);
    expect(api.child.alive()).toBe(true);
    expect((await fetch(`${api.url}/healthz`)).status).toBe(200);
    // An abandoned upload is routine (a debug line at most): nothing was logged as a failed request.
    expect(
      api.child
        .records()
        .filter((rec) => rec.level === 'error')
        .map((rec) => `${String(rec.msg)} ${String(rec.err)}`),
    ).toEqual([]);
    // Not one new key under this API's prefix: no record, no outbox entry, no key; the one
    // task of the setup is still queued (no other tenant cancelled it).
    const written: string[] = [];
    for await (const batch of redis.scanIterator({ MATCH: `${prefix}*`, COUNT: 1000 })) written.push(...batch.filter((k) => !before.has(k)));
    expect(written).toEqual([]);
    expect(await redis.hGet(`${prefix}task:${keys.fuzzTask}`, 'status')).toBe('queued');
    // Nor was any setup task changed (no rerun, no redrive, no cancel), nor a dead letter taken out.
    expect(await setupTasks()).toEqual(tasksBefore);
    expect(await deadLetters()).toEqual(deadBefore);
    expect(deadBefore).toEqual([keys.fuzzDead]);
    // And a valid request still works afterwards.
    const ok = await fetch(`${api.url}/tasks`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${keys.valid}` },
      body: JSON.stringify({ user_id: 'u', content: 'after the storm' }),
    });
    expect(ok.status).toBe(202);
  });
});
