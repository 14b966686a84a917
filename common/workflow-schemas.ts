/**
 * The request schemas of workflows (POST /workflows, ctx.spawn), in a module of their own with
 * no Node-only import, so the typed client and its tool definitions can use them in a browser.
 */
import { z } from 'zod';
import { PRIORITIES } from './task.ts';

/** Steps one workflow may have. */
export const MAX_STEPS = 100;

const STEP_ID = /^[a-z0-9][a-z0-9_-]{0,62}$/i;
const stepId = z.string({ error: 'must be a string' }).regex(STEP_ID, 'letters, digits, "_" and "-", at most 63');
const typeName = z.string({ error: 'must be a string' }).regex(/^[a-z][a-z0-9_.-]{0,63}$/, 'must be a task type name');
const label = z
  .string()
  .min(1, 'must not be empty')
  .max(256, 'at most 256 characters')
  .regex(/^\P{Cc}*$/u, 'must not contain control characters');

export const workflowStepSchema = z.strictObject({
  id: stepId,
  type: typeName,
  input: z.unknown().refine((v) => v !== undefined, 'is required'),
  needs: z.array(stepId).max(MAX_STEPS).default([]),
  priority: z.enum(PRIORITIES).default('normal'),
  max_attempts: z.number({ error: 'must be a whole number' }).int().min(1).max(100).optional(),
});
export type WorkflowStepSpec = z.input<typeof workflowStepSchema>;

/** POST /workflows with its steps. */
export const workflowStepsBody = z.strictObject({
  name: label.optional(),
  user_id: label.optional(),
  steps: z.array(workflowStepSchema).min(1, 'at least one step').max(MAX_STEPS, `at most ${MAX_STEPS} steps`),
});

/** POST /workflows from a built-in template (the registry's, e.g. `seed_report`). */
export const workflowTemplateBody = z.strictObject({
  template: z.string({ error: 'must be a string' }).regex(/^[a-z][a-z0-9_]{0,63}$/, 'must be a template name'),
  input: z.unknown().default({}),
  name: label.optional(),
  user_id: label.optional(),
});
