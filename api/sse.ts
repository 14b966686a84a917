/**
 * Serving a stream of history events as server-sent events (GET /tasks/:id/events and
 * GET /workflows/:id/events): keep-alive comments, an end when the client goes or the server
 * stops, and a comment naming the failure when the store goes away mid-stream.
 */
import type { Context } from 'hono';
import { streamSSE } from 'hono/streaming';
import { sleep } from '../common/backoff.ts';
import { ValidationError, errorMessage } from '../common/errors.ts';
import type { Logger } from '../common/logger.ts';
import { isEventId } from '../common/task.ts';

/** The Last-Event-ID header (or `last_event_id` query parameter) of a resumed stream, checked. */
export function resumeFrom(c: Context): string | null {
  const resume = c.req.header('last-event-id') ?? c.req.query('last_event_id');
  if (resume !== undefined && !isEventId(resume)) {
    throw new ValidationError('Last-Event-ID: must be an event id from this stream', [{ path: 'Last-Event-ID', message: 'not an event id' }]);
  }
  return resume ?? null;
}

export interface SseOptions {
  keepAliveMs: number;
  /** Aborts when the server shuts down. */
  stop: AbortSignal;
  logger: Logger;
  /** Log fields naming what is streamed. */
  what: Record<string, string>;
}

/** Streams `events(signal)` until it ends, the client goes away or the server stops. */
export function serveEvents(
  c: Context,
  opts: SseOptions,
  events: (signal: AbortSignal) => AsyncIterable<{ id: string; event: string; data: unknown }>,
): Response {
  c.header('X-Accel-Buffering', 'no');
  return streamSSE(c, async (stream) => {
    const ac = new AbortController();
    stream.onAbort(() => ac.abort());
    if (opts.stop.aborted) ac.abort();
    else opts.stop.addEventListener('abort', () => ac.abort(), { once: true });
    // Comments keep proxies and load balancers from closing a quiet stream.
    const keepAlive = (async () => {
      while (!ac.signal.aborted) {
        await sleep(opts.keepAliveMs, ac.signal);
        if (!ac.signal.aborted) await stream.write(': keep-alive\n\n').catch(() => ac.abort());
      }
    })();
    try {
      for await (const v of events(ac.signal)) {
        await stream.writeSSE({ id: v.id, event: v.event, data: JSON.stringify(v.data) });
      }
    } catch (err) {
      // Redis went away: end the stream; the client reconnects with Last-Event-ID.
      opts.logger.warn('event stream ended early', { ...opts.what, err: errorMessage(err) });
      await stream.write(`: ${errorMessage(err).replace(/[\r\n]+/g, ' ')}; reconnect with Last-Event-ID\n\n`).catch(() => undefined);
    } finally {
      ac.abort();
      await keepAlive;
    }
  });
}
