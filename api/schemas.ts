/** Request schemas of the HTTP API. */
import { z } from 'zod';
import { PRIORITIES } from '../common/task.ts';

const userId = z.string().min(1, 'must not be empty').max(256, 'at most 256 characters').regex(/^\P{Cc}*$/u, 'must not contain control characters');

/** The seed's body: `{"user_id", "content"}`, run by the `agent` type. */
export const seedBody = z.strictObject({
  user_id: userId,
  content: z.string({ error: 'must be a string' }),
});

/** The general form: any registered type with its input. */
export const generalBody = z.strictObject({
  type: z.string({ error: 'must be a string' }).regex(/^[a-z][a-z0-9_.-]{0,63}$/, 'must be a task type name'),
  input: z.unknown().refine((v) => v !== undefined, 'is required'),
  user_id: userId.optional(),
  priority: z.enum(PRIORITIES).default('normal'),
});

export type SeedBody = z.infer<typeof seedBody>;
export type GeneralBody = z.infer<typeof generalBody>;
