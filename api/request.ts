/**
 * From an HTTP request to a submission: the headers, the body (read with a byte limit), the
 * JSON, and the mapping of the seed's and the general body forms to a task of a known type
 * with a valid input. Every refusal names the field at fault.
 */
import type { Context } from 'hono';
import { PayloadTooLargeError, UnsupportedMediaTypeError, ValidationError, errorMessage } from '../common/errors.ts';
import type { TaskRegistry } from '../common/registry.ts';
import type { Priority } from '../common/task.ts';
import { validationError } from './errors.ts';
import { generalBody, seedBody } from './schemas.ts';
import type { SubmitRequest } from './submit.ts';

const JSON_TYPE = /^application\/(?:[\w.+-]+\+)?json\s*(?:;|$)/i;
const IDEMPOTENCY_KEY = /^[\x21-\x7e]{1,255}$/;

export interface Submission {
  request: SubmitRequest;
  idempotencyKey: string | undefined;
  /** Seed 000's `async_mode`: false asks for the result in the answer. */
  asyncMode: boolean | undefined;
}

/** Reads and checks a POST /tasks request. */
export async function readSubmission(c: Context, registry: TaskRegistry, opts: { bodyLimit: number; maxAttempts: number }): Promise<Submission> {
  const contentType = c.req.header('content-type');
  if (!contentType || !JSON_TYPE.test(contentType)) throw new UnsupportedMediaTypeError(contentType);
  const idempotencyKey = c.req.header('idempotency-key');
  if (idempotencyKey !== undefined && !IDEMPOTENCY_KEY.test(idempotencyKey)) {
    throw new ValidationError('Idempotency-Key: 1 to 255 visible ASCII characters', [{ path: 'Idempotency-Key', message: 'invalid header' }]);
  }
  const body = parseJson(await readBody(c, opts.bodyLimit));
  const { asyncMode, ...request } = toSubmitRequest(body, registry, opts.maxAttempts);
  return { request, idempotencyKey, asyncMode };
}

/**
 * The body as text, refused with a 413 past `limit` bytes. With a Content-Length (what
 * clients send) the length is checked first and the body is then read straight from the
 * socket, which skips building a web Request; a chunked body is counted as it comes.
 */
async function readBody(c: Context, limit: number): Promise<string> {
  const length = c.req.header('content-length');
  if (length !== undefined && /^\d{1,15}$/.test(length)) {
    if (Number(length) > limit) throw new PayloadTooLargeError(limit);
    return c.req.text();
  }
  const reader: ReadableStreamDefaultReader<Uint8Array> | undefined = c.req.raw.body?.getReader();
  if (!reader) return '';
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
  return Buffer.concat(chunks).toString('utf8');
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
  if (general) {
    const parsed = generalBody.safeParse(body);
    if (!parsed.success) throw validationError(parsed.error);
    ({ type: typeName, input: rawInput, priority, async_mode: asyncMode } = parsed.data);
    userId = parsed.data.user_id ?? null;
  } else {
    const parsed = seedBody.safeParse(body);
    if (!parsed.success) throw validationError(parsed.error);
    typeName = 'agent';
    rawInput = { content: parsed.data.content };
    userId = parsed.data.user_id;
    asyncMode = parsed.data.async_mode;
    priority = parsed.data.priority;
  }
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
  return { type: typeName, input: input.data, userId, priority, maxAttempts: type.maxAttempts ?? defaultMaxAttempts, asyncMode };
}
