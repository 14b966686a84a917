/**
 * A BullMQ worker of `npm run bench -- compare`: runs the product's demo `runAgent` with a
 * context whose progress goes to job.updateProgress, and whose log lines and partial chunks
 * go to job.log, so it does the same work and about as many writes per task as the product.
 */
import { Worker, type Job } from 'bullmq';
import type { HandlerContext } from '../common/registry.ts';
import { agentInput, runAgent, type AgentResult } from '../worker/agent-logic.ts';
import { connection, installStatsSignal, onStop, settings } from './bullmq-shared.ts';

installStatsSignal();

async function processor(job: Job, _token?: string, signal?: AbortSignal): Promise<AgentResult> {
  // Log lines are fire-and-forget in the handler's contract; the job waits for them before it ends.
  const pending: Promise<unknown>[] = [];
  const ctx: HandlerContext = {
    taskId: job.id ?? '',
    tenant: 'default',
    attempt: job.attemptsMade + 1,
    userId: null,
    signal: signal ?? new AbortController().signal,
    progress: (percent, message) => job.updateProgress(message === undefined ? percent : { percent, message }),
    log: (level, message, data) => {
      pending.push(job.log(JSON.stringify({ level, message, ...data })).catch((err: unknown) => process.stderr.write(`job.log failed: ${String(err)}\n`)));
    },
    partial: async (chunk) => {
      await job.log(chunk);
    },
    needs: {},
    spawn: () => Promise.reject(new Error('ctx.spawn is not part of the benchmark')),
  };
  try {
    return await runAgent(ctx, agentInput.parse(job.data));
  } finally {
    await Promise.all(pending);
  }
}

const worker = new Worker(settings.queue, processor, { connection: connection(), prefix: settings.prefix, concurrency: settings.concurrency });
worker.on('error', (err) => process.stderr.write(`worker error: ${err.message}\n`));
worker.on('failed', (job, err) => process.stderr.write(`job ${job?.id ?? '?'} failed: ${err.message}\n`));
await worker.waitUntilReady();
process.stdout.write(`BullMQ worker started (queue ${settings.queue}, concurrency ${settings.concurrency})\n`);

onStop(() => worker.close());
