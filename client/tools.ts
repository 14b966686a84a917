/**
 * The arguments of seed 002's agent tools as zod schemas, derived from the API's own request
 * schemas (api/schemas.ts), and their JSON-schema definitions for LLM function calling. The
 * MCP server (mcp/server.ts) registers the same schemas as its tools' input schemas, so an
 * agent sees one contract whichever way it calls.
 */
import { z } from 'zod';
import { taskIdSchema } from '../api/openapi-schemas.ts';
import { generalBody, listQuery } from '../api/schemas.ts';
import { workflowStepsBody, workflowTemplateBody } from '../common/workflow-schemas.ts';

/** Tasks one call may name: the waits run side by side, one event stream each. */
export const MAX_TOOL_TASKS = 100;
/** Default and longest wait of `wait_for_tasks`, in seconds. */
export const DEFAULT_WAIT_SECONDS = 30;
export const MAX_WAIT_SECONDS = 600;

const taskIds = z
  .array(taskIdSchema)
  .min(1, 'at least one task id')
  .max(MAX_TOOL_TASKS, `at most ${MAX_TOOL_TASKS} task ids`)
  .describe('Task ids, as submit_task answered them.');
const oneTask = z.strictObject({ task_id: taskIdSchema });

/** Sent as the Idempotency-Key header (POST /tasks, POST /workflows): the API's own rule, 1 to 255 visible ASCII characters. */
const idempotencyKeyArg = z
  .string()
  .regex(/^[\x21-\x7e]{1,255}$/, 'must be 1 to 255 visible ASCII characters')
  .optional()
  .describe(
    'A key of your own for this submission: calling again with the same key and arguments (after a timeout, say) answers what the first call started instead of starting it twice.',
  );

/** POST /tasks in its general form, without `async_mode` (a tool that waits is wait_for_tasks). */
const submitArgs = generalBody.omit({ async_mode: true }).extend({
  idempotency_key: idempotencyKeyArg,
  type: generalBody.shape.type.describe(
    'The task type, e.g. `agent` (input `{"content": "text to analyse"}`); the API names the known types when one is wrong.',
  ),
  input: generalBody.shape.input.describe('The input of the task type, checked against its schema: a wrong field is refused and named.'),
  user_id: generalBody.shape.user_id.describe('A free label for whom the task is, to filter list_tasks by.'),
  priority: generalBody.shape.priority.describe('Queue priority: high tasks start first under a backlog.'),
});

/**
 * POST /workflows in either of its forms, as one object (a tool's arguments must be an
 * object schema): `steps`, or a built-in `template` with its `input`. The API checks the
 * form it gets, and names what is wrong.
 */
const workflowArgs = workflowStepsBody
  .extend({
    steps: workflowStepsBody.shape.steps
      .optional()
      .describe('The steps: each an id, a task type, its input, and the ids of the steps it needs (it starts when they are all done, and sees their results).'),
    template: workflowTemplateBody.shape.template.optional().describe('Instead of steps: a built-in workflow, e.g. `seed_report` (input `{"topic": "…"}`).'),
    input: workflowTemplateBody.shape.input.unwrap().optional().describe('The input of the template.'),
    idempotency_key: idempotencyKeyArg,
  })
  .refine((a) => (a.steps === undefined) !== (a.template === undefined), { message: 'give either steps or template', path: ['steps'] });

/** The arguments of each tool, by tool name. */
export const AGENT_TOOL_ARGS = {
  submit_task: submitArgs,
  check_task: oneTask,
  wait_for_tasks: z.strictObject({
    task_ids: taskIds,
    max_wait_seconds: z
      .number()
      .min(0)
      .max(MAX_WAIT_SECONDS)
      .default(DEFAULT_WAIT_SECONDS)
      .describe(`Give up waiting after this many seconds (default ${DEFAULT_WAIT_SECONDS}, at most ${MAX_WAIT_SECONDS}); unfinished tasks keep running.`),
  }),
  get_task_results: z.strictObject({ task_ids: taskIds }),
  list_tasks: listQuery.strict(),
  cancel_task: oneTask,
  submit_workflow: workflowArgs,
  get_quota: z.strictObject({}),
  get_statistics: z.strictObject({}),
} as const;

export type AgentToolName = keyof typeof AGENT_TOOL_ARGS;
export type AgentToolArgs<N extends AgentToolName> = z.input<(typeof AGENT_TOOL_ARGS)[N]>;

/** What each tool does, written for the model that calls it. */
export const AGENT_TOOL_DESCRIPTIONS: Record<AgentToolName, string> = {
  submit_task:
    'Submit a long-running task to the queue and get its task id at once, without waiting for it. Submit independent tasks one after another, then wait for them together with wait_for_tasks.',
  check_task:
    'The current state of one task: status (queued, running, done, failed, cancelled), progress 0-100 with a message, result once done, error once failed.',
  wait_for_tasks:
    'Wait until every given task has finished (done, failed or cancelled), or max_wait_seconds have passed. Answers each task id with its status then; call it again to keep waiting for those still running.',
  get_task_results:
    'The results of the given tasks that are done, by task id. Tasks not done (still running, failed or cancelled) are left out: see check_task.',
  list_tasks: 'One page of your tasks, newest first, optionally filtered by status, user_id or type. Pass next_cursor as cursor for the next page.',
  cancel_task: 'Cancel a queued or running task. A task that has already finished cannot be cancelled (the error says so).',
  submit_workflow:
    'Start a workflow: steps that run as tasks as soon as the steps they need are done (fan-out, fan-in), or a built-in template. Answers the workflow id and each step’s task id at once: wait for those with wait_for_tasks and read them with get_task_results.',
  get_quota: 'The quota of your tenant: units per window, spent, remaining (null when unlimited) and when the window resets.',
  get_statistics: 'How busy the queue is: your tasks counted by status and type, the backlog per priority, the live workers.',
};

/** A tool as LLM function calling takes it (OpenAI `tools[].function`, Anthropic `tools[]` with `input_schema: parameters`). */
export interface ToolDefinition {
  name: AgentToolName;
  description: string;
  /** JSON Schema (draft 2020-12) of the arguments object, from the zod schema the tool checks with. */
  parameters: Record<string, unknown>;
}

/** JSON-schema definitions of every agent tool, for LLM function calling. */
export function toolDefinitions(): ToolDefinition[] {
  return (Object.keys(AGENT_TOOL_ARGS) as AgentToolName[]).map((name) => {
    const { $schema: _, ...parameters } = z.toJSONSchema(AGENT_TOOL_ARGS[name], { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>;
    return { name, description: AGENT_TOOL_DESCRIPTIONS[name], parameters };
  });
}
