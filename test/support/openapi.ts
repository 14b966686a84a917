/**
 * Checking real answers of the app against the OpenAPI document it serves (api/openapi.ts).
 *
 * `loadSpec(app)` reads GET /openapi.json and compiles its schemas with the JSON Schema 2020-12
 * validator that @seriousme/openapi-schema-validator uses. `Conformance.watch(app)` then wraps
 * the app's `fetch` (which `app.request()` and the in-process calls of POST /mcp go through),
 * so that EVERY answer the app gives is checked against the operation of its method and route:
 *
 * - the status is declared for the operation (a method a path does not take: the 405 of
 *   `components.responses.MethodNotAllowed`, with the `Allow` its path's description names;
 *   no route at all: a 404);
 * - every header the operation declares as required is there, and every header the answer
 *   sends is declared (but the representation headers of {@link UNDECLARED_HEADERS});
 * - the content type is declared, a JSON body validates against its schema, and each event
 *   of a `text/event-stream` validates against the media type's `x-itemSchema`.
 *
 * A mismatch throws from the call (so the test fails where it made it) and is kept in
 * `failures` too (an in-process call of an MCP tool would turn the throw into a tool error).
 */
import { createRequire } from 'node:module';
import type { Hono } from 'hono';
import { expect } from 'vitest';
import type { AppEnv } from '../../api/auth.ts';
import { parseSse } from '../../client/sse.ts';

export type Json = Record<string, unknown>;
interface ErrorObject {
  instancePath: string;
  message?: string;
}
export interface ValidateFunction {
  (data: unknown): boolean;
  errors?: ErrorObject[] | null;
}
interface Ajv {
  addSchema(schema: object, key: string): Ajv;
  compile(schema: object): ValidateFunction;
}

// The JSON Schema 2020-12 validator that @seriousme/openapi-schema-validator itself uses
// (ajv 8 with ajv-formats), resolved from that package: the top-level ajv is eslint's ajv 6.
const fromValidator = createRequire(createRequire(import.meta.url).resolve('@seriousme/openapi-schema-validator'));
const Ajv2020 = (fromValidator('ajv/dist/2020.js') as { default: new (opts: object) => Ajv }).default;
const addFormats = (fromValidator('ajv-formats') as { default: (ajv: Ajv) => void }).default;

const BASE = 'https://spec.local/openapi.json';
export const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];
/** `/tasks/:id` (a Hono route) as the document writes it: `/tasks/{id}`. */
export const specPath = (path: string) => path.replace(/:([A-Za-z0-9_]+)/g, '{$1}');

/**
 * Headers an answer may send without the document declaring them: they describe the
 * representation or the connection, not the API (OpenAPI says Content-Type is never declared).
 */
export const UNDECLARED_HEADERS = new Set([
  'content-type',
  'content-length',
  'cache-control',
  'connection',
  'transfer-encoding',
  'date',
  'vary',
  // The dashboard page's policy (api/ui.ts).
  'content-security-policy',
  // A hint to nginx not to buffer an event stream (api/sse.ts).
  'x-accel-buffering',
]);

export class Spec {
  private readonly ajv: Ajv;
  private readonly compiled = new Map<string, ValidateFunction>();

  constructor(readonly doc: Json) {
    this.ajv = new Ajv2020({ strict: false, allErrors: true });
    addFormats(this.ajv);
    this.ajv.addSchema(doc, BASE);
  }

  get paths(): Record<string, Json> {
    return this.doc.paths as Record<string, Json>;
  }

  /** The operations of the document, as `GET /tasks/{id}`. */
  operations(): string[] {
    return Object.entries(this.paths).flatMap(([path, item]) => METHODS.filter((m) => item[m]).map((m) => `${m.toUpperCase()} ${path}`));
  }

  /** Follows `$ref`s inside the document. */
  deref<T = Json>(v: unknown): T {
    let node = v as Json;
    for (let i = 0; i < 10 && node && typeof node.$ref === 'string'; i++) {
      const ref = node.$ref;
      expect(ref.startsWith('#/'), ref).toBe(true);
      node = ref
        .slice(2)
        .split('/')
        .reduce<Json>((n, k) => n[k.replace(/~1/g, '/').replace(/~0/g, '~')] as Json, this.doc);
      expect(node, ref).toBeDefined();
    }
    return node as T;
  }

  /** A validator for a schema of the document (a `#/…` reference resolves inside it). */
  validatorOf(schema: Json): ValidateFunction {
    const key = JSON.stringify(schema);
    let v = this.compiled.get(key);
    if (!v) {
      const s = typeof schema.$ref === 'string' && schema.$ref.startsWith('#/') ? { $ref: `${BASE}${schema.$ref}` } : schema;
      v = this.ajv.compile(s);
      this.compiled.set(key, v);
    }
    return v;
  }

  /** Why `value` does not match `schema`, or null when it does. */
  mismatch(schema: Json, value: unknown): string | null {
    const validate = this.validatorOf(schema);
    return validate(value) ? null : `${JSON.stringify(validate.errors?.slice(0, 5))}\n${JSON.stringify(value).slice(0, 1500)}`;
  }

  expectValid(schema: Json, value: unknown, what: string): void {
    const why = this.mismatch(schema, value);
    expect(why === null, `${what}: ${why}`).toBe(true);
  }

  /** The declared response of a route (`/tasks/:id` or `/tasks/{id}`) for a status. */
  declared(method: string, path: string, status: number): Json {
    const item = this.paths[specPath(path)];
    expect(item, `${path} in the document`).toBeDefined();
    const op = item?.[method.toLowerCase()] as { responses: Record<string, unknown> } | undefined;
    expect(op, `${method} ${path} in the document`).toBeDefined();
    const response = op?.responses[String(status)];
    expect(response, `${method} ${path} declares ${status}`).toBeDefined();
    return this.deref(response);
  }

  /** The path of the document a request path falls under: the one with the most literal segments. */
  match(pathname: string): string | undefined {
    const segs = pathname.split('/');
    let best: { path: string; literal: number } | undefined;
    for (const path of Object.keys(this.paths)) {
      const ps = path.split('/');
      if (ps.length !== segs.length) continue;
      let literal = 0;
      const ok = ps.every((p, i) => {
        const s = segs[i] ?? '';
        if (/^\{[^}]+\}$/.test(p)) return s !== '';
        literal++;
        return p === s;
      });
      if (ok && (!best || literal > best.literal)) best = { path, literal };
    }
    return best?.path;
  }
}

export async function loadSpec(app: Hono<AppEnv>): Promise<Spec> {
  const res = await app.request('http://localhost/openapi.json');
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toMatch(/^application\/json/);
  return new Spec((await res.json()) as Json);
}

/** What a checked answer was checked as. */
export interface Checked {
  /** `GET /tasks/{id}`, `PATCH /tasks` for a 405, or `GET <no route>`. */
  operation: string;
  status: number;
  /** The JSON body, when it had one. */
  body?: unknown;
  /** The events of an event stream, once it has ended (see `settle`). */
  events?: Promise<{ id?: string; event: string; data: unknown }[]>;
}

/** Every operation answered, with the statuses seen, across every app watched. */
export class Coverage {
  readonly seen = new Map<string, Set<number>>();
  add(operation: string, status: number): void {
    const s = this.seen.get(operation) ?? new Set<number>();
    s.add(status);
    this.seen.set(operation, s);
  }
  /** The operations of `spec` never answered with a 2xx, but those in `skipped`. */
  missing(spec: Spec, skipped: Record<string, string> = {}): string[] {
    return spec.operations().filter((op) => !(op in skipped) && ![...(this.seen.get(op) ?? [])].some((s) => s >= 200 && s < 300));
  }
}

export class Conformance {
  readonly failures: string[] = [];
  private readonly checked = new WeakMap<Response, Checked>();
  private readonly pending = new Set<{ done: Promise<unknown>; stop: AbortController }>();

  constructor(
    readonly spec: Spec,
    readonly coverage = new Coverage(),
  ) {}

  /** Loads the app's document and checks every answer the app gives from now on. */
  static async watch(app: Hono<AppEnv>, coverage?: Coverage): Promise<Conformance> {
    const c = new Conformance(await loadSpec(app), coverage);
    const inner = app.fetch;
    app.fetch = async (request, env, ctx) => {
      const { method, url } = request;
      const res = await inner(request, env, ctx);
      await c.check(method, url, res);
      return res;
    };
    return c;
  }

  /** What an answer of the watched app was checked as (undefined for another app's). */
  find(res: Response): Checked | undefined {
    return this.checked.get(res);
  }

  /**
   * Waits for the event streams being checked to end, at most `ms`; the ones still open are
   * then cut (the events read so far were checked).
   */
  async settle(ms = 2000): Promise<void> {
    const all = [...this.pending];
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.allSettled(all.map((p) => p.done)), new Promise((r) => (timer = setTimeout(r, ms)))]);
    clearTimeout(timer);
    for (const p of all) p.stop.abort();
    await Promise.allSettled(all.map((p) => p.done));
  }

  /** Takes the failures seen so far (for an afterEach to assert none). */
  drain(): string[] {
    return this.failures.splice(0);
  }

  private fail(what: string, why: string): never {
    const msg = `${what}: ${why}`;
    this.failures.push(msg);
    throw new Error(`the answer does not conform to the OpenAPI document: ${msg}`);
  }

  private async check(requestMethod: string, requestUrl: string, res: Response): Promise<void> {
    const { spec } = this;
    const url = new URL(requestUrl);
    const method = requestMethod.toUpperCase();
    const path = spec.match(url.pathname);
    const item = path === undefined ? undefined : spec.paths[path];
    const op = item?.[method.toLowerCase()] as { responses: Record<string, unknown> } | undefined;
    const operation = `${method} ${path ?? '<no route>'}`;
    const what = `${operation} (${url.pathname}) ${res.status}`;
    const components = spec.doc.components as { responses: Record<string, Json> };

    let response: Json | undefined;
    if (op) {
      const r = op.responses[String(res.status)];
      if (!r) this.fail(what, `status not declared (declared: ${Object.keys(op.responses).join(', ')})`);
      response = spec.deref(r);
    } else if (res.status === 401 && !(path !== undefined && isPublic(spec, path))) {
      // Authentication runs before routing: a request without a key never learns what is there.
      response = components.responses.Unauthorized;
    } else if (item && res.status === 405) {
      response = components.responses.MethodNotAllowed;
      const allow = /`Allow: ([A-Z, ]+)`/.exec(String(item.description))?.[1];
      if (allow === undefined) this.fail(what, `the path's description names no \`Allow: …\``);
      if (res.headers.get('allow') !== allow) this.fail(what, `Allow: ${res.headers.get('allow')}, the path's description says ${allow}`);
    } else if (!item && res.status === 404) {
      response = components.responses.NotFound;
    } else {
      this.fail(what, op ? 'status not declared' : item ? `${method} is not an operation of ${path}: expected 405` : 'no such path: expected 404');
    }
    response = spec.deref<Json>(response);

    // Headers: the required ones there, every one sent declared.
    const headers = (response.headers ?? {}) as Record<string, unknown>;
    const declaredNames = new Set(Object.keys(headers).map((h) => h.toLowerCase()));
    for (const [name, h] of Object.entries(headers)) {
      if (spec.deref<{ required?: boolean }>(h).required && res.headers.get(name) === null) this.fail(what, `required header ${name} missing`);
    }
    for (const [name, value] of res.headers) {
      if (!UNDECLARED_HEADERS.has(name) && !declaredNames.has(name)) this.fail(what, `header ${name}: ${value} is not declared`);
      const h = Object.entries(headers).find(([n]) => n.toLowerCase() === name)?.[1];
      const schema = h === undefined ? undefined : spec.deref<{ schema?: Json }>(h).schema;
      if (schema) {
        const v = schema.type === 'integer' && /^-?\d+$/.test(value) ? Number(value) : value;
        const why = spec.mismatch(schema, v);
        if (why) this.fail(what, `header ${name}: ${why}`);
      }
    }

    const checked: Checked = { operation, status: res.status };
    this.checked.set(res, checked);
    if (res.status >= 200 && res.status < 300 && op) this.coverage.add(operation, res.status);

    // The body.
    const content = response.content as Record<string, Json> | undefined;
    if (!content) {
      if (res.body !== null && (await res.clone().text()) !== '') this.fail(what, 'a body, where the document declares none');
      return;
    }
    const type = (res.headers.get('content-type') ?? '').split(';')[0]?.trim() ?? '';
    const media = content[type];
    if (!media) this.fail(what, `content type ${type || '(none)'} not declared (declared: ${Object.keys(content).join(', ')})`);
    if (type === 'application/json' || type.endsWith('+json')) {
      const text = await res.clone().text();
      let body: unknown;
      try {
        body = JSON.parse(text);
      } catch {
        this.fail(what, `not JSON: ${text.slice(0, 200)}`);
      }
      checked.body = body;
      const why = spec.mismatch((media.schema ?? {}) as Json, body);
      if (why) this.fail(what, why);
    } else if (type === 'text/event-stream') {
      const itemSchema = media['x-itemSchema'] as Json | undefined;
      if (!itemSchema) this.fail(what, 'an event stream without an `x-itemSchema` for its events');
      const stop = new AbortController();
      const events = this.readEvents(res.clone(), itemSchema, what, stop.signal);
      const entry = { done: events, stop };
      this.pending.add(entry);
      checked.events = events.finally(() => this.pending.delete(entry));
      checked.events.catch(() => undefined);
    }
  }

  /** Checks each event of a stream as it comes; resolves with them when the stream ends or `signal` cuts it. */
  private async readEvents(res: Response, itemSchema: Json, what: string, signal: AbortSignal) {
    const out: { id?: string; event: string; data: unknown }[] = [];
    if (!res.body) return out;
    try {
      for await (const m of parseSse(res.body, signal)) {
        let data: unknown;
        try {
          data = JSON.parse(m.data);
        } catch {
          this.failures.push(`${what}: event ${m.event}: data is not JSON: ${m.data.slice(0, 200)}`);
          continue;
        }
        const event = { ...(m.id !== undefined ? { id: m.id } : {}), event: m.event, data };
        const why = this.spec.mismatch(itemSchema, event);
        if (why) this.failures.push(`${what}: event ${m.event}: ${why}`);
        out.push(event);
      }
    } catch (err) {
      if (!signal.aborted) throw err;
    }
    return out;
  }
}

/** A path whose operations need no key (their `security` is empty). */
function isPublic(spec: Spec, path: string): boolean {
  const item = spec.paths[path] ?? {};
  return METHODS.some((m) => Array.isArray((item[m] as Json | undefined)?.security) && ((item[m] as Json).security as unknown[]).length === 0);
}
