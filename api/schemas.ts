/** Request schemas of the HTTP API. */
import { z } from 'zod';
import { ValidationError } from '../common/errors.ts';
import type { ListCursor } from '../common/store/port.ts';
import { SCOPES } from '../common/store/port.ts';
import { PRIORITIES, TASK_STATUSES, isTaskId, isTenant } from '../common/task.ts';

const userId = z
  .string()
  .min(1, 'must not be empty')
  .max(256, 'at most 256 characters')
  .regex(/^\P{Cc}*$/u, 'must not contain control characters');

/** The longest delay of a delayed task (run_at / delay_ms). */
export const MAX_DELAY_MS = 30 * 86_400_000;
const runAt = z.iso.datetime({ offset: true, error: 'must be an ISO 8601 date-time, like 2026-12-01T09:00:00Z' });
const delayMs = z
  .number({ error: 'must be a number of milliseconds' })
  .int('must be a whole number of milliseconds')
  .min(0)
  .max(MAX_DELAY_MS, `at most ${MAX_DELAY_MS} ms (30 days)`);

/** The seed's body: `{"user_id", "content"}`, run by the `agent` type. */
export const seedBody = z.strictObject({
  user_id: userId,
  content: z.string({ error: 'must be a string' }),
  priority: z.enum(PRIORITIES).default('normal'),
  /** Seed 000: false answers with the result when it comes within the longest wait. */
  async_mode: z.boolean({ error: 'must be a boolean' }).optional(),
  run_at: runAt.optional(),
  delay_ms: delayMs.optional(),
});

/** The general form: any registered type with its input. */
export const generalBody = z.strictObject({
  type: z.string({ error: 'must be a string' }).regex(/^[a-z][a-z0-9_.-]{0,63}$/, 'must be a task type name'),
  input: z.unknown().refine((v) => v !== undefined, 'is required'),
  user_id: userId.optional(),
  priority: z.enum(PRIORITIES).default('normal'),
  async_mode: z.boolean({ error: 'must be a boolean' }).optional(),
  /** Attempts before it fails (default: the type's, else MAX_ATTEMPTS). */
  max_attempts: z.number({ error: 'must be a whole number' }).int('must be a whole number').min(1).max(100).optional(),
  /** A delayed task: `scheduled` until then, published by the relay when due. */
  run_at: runAt.optional(),
  delay_ms: delayMs.optional(),
});

const seconds = (max: number) => z.coerce.number({ error: 'must be a number of seconds' }).min(0).max(max, `at most ${max} seconds`);
const flag = z.enum(['true', 'false', '1', '0']).transform((v) => v === 'true' || v === '1');

export const postQuery = (maxWait: number) => z.object({ wait: seconds(maxWait).optional() });
export const getQuery = (maxWait: number) => z.object({ wait: seconds(maxWait).optional(), history: flag.default(false) });

export const listQuery = z.object({
  status: z.enum(TASK_STATUSES).optional(),
  user_id: userId.optional(),
  type: z
    .string()
    .regex(/^[a-z][a-z0-9_.-]{0,63}$/, 'must be a task type name')
    .optional(),
  limit: z.coerce.number({ error: 'must be a number' }).int().min(1).max(100).default(20),
  cursor: z.string().max(200).optional(),
});

/** Listing cursors are opaque to clients: base64url of `<created_at ms>.<task id>`. */
export function encodeCursor(c: ListCursor): string {
  return Buffer.from(`${c.createdAt}.${c.id}`).toString('base64url');
}

export function decodeCursor(s: string): ListCursor {
  const [ms = '', id = ''] = Buffer.from(s, 'base64url').toString('utf8').split('.');
  if (!/^\d{1,15}$/.test(ms) || !isTaskId(id)) throw new ValidationError('cursor: not a cursor from this API', [{ path: 'cursor', message: 'invalid cursor' }]);
  return { createdAt: Number(ms), id };
}

export type SeedBody = z.infer<typeof seedBody>;
export type GeneralBody = z.infer<typeof generalBody>;

/** POST /admin/keys. */
export const keyBody = z.strictObject({
  tenant: z.string({ error: 'must be a string' }).refine(isTenant, 'lower-case letters, digits, "_" and "-", at most 63'),
  scopes: z.array(z.enum(SCOPES as [string, ...string[]]).transform((s) => s as (typeof SCOPES)[number])).min(1, 'at least one scope'),
  name: z
    .string()
    .max(200)
    .regex(/^\P{Cc}*$/u, 'must not contain control characters')
    .optional(),
});

const limit = (max: number) => z.number({ error: 'must be a whole number or null' }).int().min(0).max(max).nullable().optional();
/** PUT /admin/tenants/:tenant/limits: null goes back to the default. */
export const limitsBody = z.strictObject({
  quota_units: limit(1_000_000_000),
  quota_window_seconds: z
    .number()
    .int()
    .min(1)
    .max(366 * 86_400)
    .nullable()
    .optional(),
  submits_per_s: limit(1_000_000),
  reads_per_s: limit(1_000_000),
  max_running: limit(1_000_000),
});
