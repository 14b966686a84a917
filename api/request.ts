/**
 * From an HTTP request to a submission: the headers, the body (read with a byte limit, strict
 * UTF-8), the JSON (no lone surrogates), and the mapping of the seed's and the general body
 * forms to a task of a known type with a valid input. Every refusal names the field at fault.
 */
import type { Context } from 'hono';
import { AppError, ClientAbortedError, PayloadTooLargeError, UnsupportedMediaTypeError, ValidationError, errorMessage } from '../common/errors.ts';
import type { TaskRegistry } from '../common/registry.ts';
import type { Priority } from '../common/task.ts';
import { validationError } from './errors.ts';
import { MAX_DELAY_MS, generalBody, seedBody } from './schemas.ts';
import type { SubmitRequest } from './submit.ts';

const JSON_TYPE = /^application\/(?:[\w.+-]+\+)?json\s*(?:;|$)/i;
const IDEMPOTENCY_KEY = /^[\x21-\x7e]{1,255}$/;
/** A media type parameter: `; name=token` or `; name="quoted"`. */
const PARAMETER = /;\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)/g;
/** Created once; `fatal` makes an invalid byte an error instead of U+FFFD. */
const UTF8 = new TextDecoder('utf-8', { fatal: true });

export interface Submission {
  request: SubmitRequest;
  idempotencyKey: string | undefined;
  /** Seed 000's `async_mode`: false asks for the result in the answer. */
  asyncMode: boolean | undefined;
}

/** Reads and checks a POST /tasks request. */
export async function readSubmission(c: Context, registry: TaskRegistry, opts: { bodyLimit: number; maxAttempts: number }): Promise<Submission> {
  const contentType = c.req.header('content-type');
  if (!contentType || !JSON_TYPE.test(contentType) || !isUtf8Charset(contentType)) throw new UnsupportedMediaTypeError(contentType);
  const idempotencyKey = idempotencyKeyOf(c);
  const text = await readBody(c, opts.bodyLimit);
  const body = parseJson(text);
  // A decoded body has no lone surrogate: only a `\uD8xx`-`\uDFxx` escape can make one.
  if (/\\u[dD][89a-fA-F]/.test(text)) refuseLoneSurrogates(body);
  const { asyncMode, ...request } = toSubmitRequest(body, registry, opts.maxAttempts);
  return { request, idempotencyKey, asyncMode };
}

/** The request's Idempotency-Key header (POST /tasks, POST /workflows), if any: 1 to 255 visible ASCII characters, or a 400. */
export function idempotencyKeyOf(c: Context): string | undefined {
  const key = c.req.header('idempotency-key');
  if (key !== undefined && !IDEMPOTENCY_KEY.test(key)) {
    throw new ValidationError('Idempotency-Key: 1 to 255 visible ASCII characters', [{ path: 'Idempotency-Key', message: 'invalid header' }]);
  }
  return key;
}

/** Reads a JSON request body the way POST /tasks does (media type, size limit, UTF-8, no lone surrogates). */
export async function readJsonBody(c: Context, bodyLimit: number): Promise<unknown> {
  const contentType = c.req.header('content-type');
  if (!contentType || !JSON_TYPE.test(contentType) || !isUtf8Charset(contentType)) throw new UnsupportedMediaTypeError(contentType);
  const text = await readBody(c, bodyLimit);
  const body = parseJson(text);
  if (/\\u[dD][89a-fA-F]/.test(text)) refuseLoneSurrogates(body);
  return body;
}

/**
 * Only UTF-8 is read: a `charset` parameter, if any, must name it (`utf-8`, any case, quoted
 * or not; `utf8` too). Any other charset is a 415 rather than a body decoded wrongly.
 */
function isUtf8Charset(contentType: string): boolean {
  if (!contentType.includes(';')) return true;
  for (const [, name = '', raw = ''] of contentType.matchAll(PARAMETER)) {
    if (name.toLowerCase() !== 'charset') continue;
    const value = (raw.startsWith('"') ? raw.slice(1, -1).replace(/\\(.)/g, '$1') : raw).trim().toLowerCase();
    if (value !== 'utf-8' && value !== 'utf8') return false;
  }
  return true;
}

/**
 * The body as text, refused with a 413 past `limit` bytes and a 400 when it is not valid
 * UTF-8. With a Content-Length (what clients send) the length is checked first and the body
 * is then read straight from the socket, which skips building a web Request (node-server's
 * `arrayBuffer()` fast path); a chunked body is counted as it comes. A client that goes away
 * mid-upload is a {@link ClientAbortedError}.
 */
async function readBody(c: Context, limit: number): Promise<string> {
  let bytes: Uint8Array;
  try {
    bytes = await readBytes(c, limit);
  } catch (err) {
    throw asClientAborted(c, err);
  }
  try {
    return UTF8.decode(bytes);
  } catch {
    const at = invalidUtf8Offset(bytes);
    throw new ValidationError(`body: not valid UTF-8 (byte offset ${at})`, [{ path: '', message: `not valid UTF-8 (byte offset ${at})` }]);
  }
}

async function readBytes(c: Context, limit: number): Promise<Uint8Array> {
  const length = c.req.header('content-length');
  if (length !== undefined && /^\d{1,15}$/.test(length)) {
    if (Number(length) > limit) throw new PayloadTooLargeError(limit);
    return new Uint8Array(await c.req.arrayBuffer());
  }
  const reader: ReadableStreamDefaultReader<Uint8Array> | undefined = c.req.raw.body?.getReader();
  if (!reader) return new Uint8Array(0);
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      await reader.cancel().catch(() => undefined);
      throw new PayloadTooLargeError(limit);
    }
    chunks.push(value);
  }
  return chunks.length === 1 && chunks[0] ? chunks[0] : Buffer.concat(chunks);
}

/** Node's errors for a connection that ended mid-request. */
const CONNECTION_GONE = new Set(['ECONNRESET', 'ECONNABORTED', 'EPIPE', 'ERR_STREAM_PREMATURE_CLOSE']);

/**
 * node-server rejects the read of an aborted upload with Node's `Error: aborted` (code
 * ECONNRESET) and aborts the request's signal: the client went away, which is routine.
 */
function asClientAborted(c: Context, err: unknown): unknown {
  if (err instanceof AppError) return err;
  const code = typeof err === 'object' && err !== null && 'code' in err ? err.code : undefined;
  if (c.req.raw.signal.aborted || (typeof code === 'string' && CONNECTION_GONE.has(code))) {
    return new ClientAbortedError(`the client went away during the upload (${errorMessage(err)})`, { cause: err });
  }
  return err;
}

/** The offset of the first byte that does not start or continue a valid UTF-8 sequence. */
function invalidUtf8Offset(b: Uint8Array): number {
  let i = 0;
  while (i < b.length) {
    const lead = b[i] ?? 0;
    if (lead < 0x80) {
      i++;
      continue;
    }
    // Bytes after the lead; the second byte's range excludes overlong forms, surrogates and > U+10FFFF.
    const more = lead >= 0xc2 && lead <= 0xdf ? 1 : lead >= 0xe0 && lead <= 0xef ? 2 : lead >= 0xf0 && lead <= 0xf4 ? 3 : 0;
    if (more === 0) return i;
    const lo = lead === 0xe0 ? 0xa0 : lead === 0xf0 ? 0x90 : 0x80;
    const hi = lead === 0xed ? 0x9f : lead === 0xf4 ? 0x8f : 0xbf;
    for (let k = 1; k <= more; k++) {
      const byte = b[i + k];
      if (byte === undefined || byte < (k === 1 ? lo : 0x80) || byte > (k === 1 ? hi : 0xbf)) return i;
    }
    i += more + 1;
  }
  return b.length;
}

interface PathStep {
  key: string | number;
  up: PathStep | undefined;
}

const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;
const LONE_SURROGATES = new RegExp(LONE_SURROGATE.source, 'g');
const MAX_PATH_STEPS = 64;
const isWellFormed = (s: string): boolean => (s as string & { isWellFormed(): boolean }).isWellFormed();
const escapeUnit = (unit: string) => `\\u${unit.charCodeAt(0).toString(16).padStart(4, '0')}`;

/**
 * Refuses a string (value or key) holding a lone surrogate, naming its path: such text
 * cannot be stored as UTF-8 and strict JSON parsers reject it. One walk, without recursion.
 */
function refuseLoneSurrogates(root: unknown): void {
  const values: unknown[] = [root];
  const paths: (PathStep | undefined)[] = [undefined];
  const refuse = (step: PathStep | undefined, s: string, what: string): never => {
    const keys: string[] = [];
    for (let p = step; p; p = p.up) keys.push(typeof p.key === 'number' ? String(p.key) : p.key.replace(LONE_SURROGATES, escapeUnit).slice(0, 100));
    keys.reverse();
    // Absurd nesting would make an absurd path: keep its two ends.
    const path = keys.length > MAX_PATH_STEPS ? [...keys.slice(0, 32), '…', ...keys.slice(-16)].join('.') : keys.join('.');
    const message = `${what}must not contain a lone surrogate (${escapeUnit(LONE_SURROGATE.exec(s)?.[0] ?? '?')})`;
    throw new ValidationError(`${path || 'body'}: ${message}`, [{ path, message }]);
  };
  while (values.length > 0) {
    const value = values.pop();
    const path = paths.pop();
    if (typeof value === 'string') {
      if (!isWellFormed(value)) refuse(path, value, '');
    } else if (Array.isArray(value)) {
      for (let i = value.length - 1; i >= 0; i--) {
        values.push(value[i]);
        paths.push({ key: i, up: path });
      }
    } else if (typeof value === 'object' && value !== null) {
      for (const [key, v] of Object.entries(value).reverse()) {
        if (!isWellFormed(key)) refuse({ key, up: path }, key, 'a key ');
        values.push(v);
        paths.push({ key, up: path });
      }
    }
  }
}

function parseJson(text: string): unknown {
  if (text.trim() === '') throw new ValidationError('body: must be a JSON object', [{ path: '', message: 'body is empty' }]);
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    // RangeError for absurd nesting, SyntaxError otherwise: both are the client's fault.
    throw new ValidationError(`body: not valid JSON (${errorMessage(err).slice(0, 200)})`, [{ path: '', message: 'not valid JSON' }]);
  }
}

/** Accepts the seed's `{user_id, content}` and the general `{type, input, user_id?, priority?}`. */
function toSubmitRequest(body: unknown, registry: TaskRegistry, defaultMaxAttempts: number): SubmitRequest & { asyncMode: boolean | undefined } {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new ValidationError('body: must be a JSON object', [{ path: '', message: 'must be a JSON object' }]);
  }
  const general = 'type' in body || 'input' in body;
  let typeName: string;
  let rawInput: unknown;
  let userId: string | null;
  let priority: Priority = 'normal';
  let asyncMode: boolean | undefined;
  let when: { run_at?: string | undefined; delay_ms?: number | undefined };
  let attempts: number | undefined;
  if (general) {
    const parsed = generalBody.safeParse(body);
    if (!parsed.success) throw validationError(parsed.error);
    ({ type: typeName, input: rawInput, priority, async_mode: asyncMode } = parsed.data);
    userId = parsed.data.user_id ?? null;
    when = parsed.data;
    attempts = parsed.data.max_attempts;
  } else {
    const parsed = seedBody.safeParse(body);
    if (!parsed.success) throw validationError(parsed.error);
    typeName = 'agent';
    rawInput = { content: parsed.data.content };
    userId = parsed.data.user_id;
    asyncMode = parsed.data.async_mode;
    priority = parsed.data.priority;
    when = parsed.data;
  }
  const runAt = runAtOf(when);
  const type = registry.get(typeName);
  if (!type) {
    throw new ValidationError(`type: unknown task type ${JSON.stringify(typeName)}; known: ${registry.names().join(', ')}`, [
      { path: 'type', message: 'unknown task type' },
    ]);
  }
  const input = type.input.safeParse(rawInput);
  // Seed-form fields sit at the top level, so their paths drop the `input.` prefix.
  if (!input.success) throw validationError(input.error, general ? ['input'] : []);
  // maxAttempts is resolved here, once, and stored with the task: the worker reads it.
  return {
    type: typeName,
    input: input.data,
    userId,
    priority,
    maxAttempts: attempts ?? type.maxAttempts ?? defaultMaxAttempts,
    asyncMode,
    ...(runAt !== undefined ? { runAt } : {}),
  };
}

/** When a delayed task is due (epoch ms), or undefined for one to run now (no delay, or a time already past). */
function runAtOf(when: { run_at?: string | undefined; delay_ms?: number | undefined }): number | undefined {
  if (when.run_at !== undefined && when.delay_ms !== undefined) {
    throw new ValidationError('run_at: give run_at or delay_ms, not both', [{ path: 'run_at', message: 'give run_at or delay_ms, not both' }]);
  }
  const now = Date.now();
  const at = when.run_at !== undefined ? Date.parse(when.run_at) : when.delay_ms !== undefined ? now + when.delay_ms : undefined;
  if (at !== undefined && at - now > MAX_DELAY_MS) {
    throw new ValidationError('run_at: at most 30 days ahead', [{ path: 'run_at', message: 'at most 30 days ahead' }]);
  }
  return at !== undefined && at > now ? at : undefined;
}
