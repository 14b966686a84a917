/**
 * OpenTelemetry: the code uses `@opentelemetry/api` only, so with no SDK started every span
 * is a no-op and nothing is exported. The entry points start the Node SDK (common/tracing-sdk.ts,
 * which only they import, so the typed client stays free of it) when `OTEL_EXPORTER_OTLP_ENDPOINT`
 * or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set; every other `OTEL_*` variable is the SDK's.
 *
 * Trace context crosses the broker in the message headers (`traceparent`, `tracestate`), and
 * the task record keeps the context of its publish, so a relay republish and every retry
 * continue the same trace.
 */
import { SpanKind, SpanStatusCode, context, propagation, trace, type Attributes, type Context, type Span } from '@opentelemetry/api';
import { errorMessage } from './errors.ts';

export const tracer = trace.getTracer('agent-task-queue');

let started = false;
/** Whether this process exports traces (startTracing ran): cheap paths skip span work when not. */
export const isTracing = (): boolean => started;
/** Called by startTracing (common/tracing-sdk.ts) once the SDK runs, and by tests that install a tracer of their own. */
export const markTracing = (on = true): void => {
  started = on;
};

/** The W3C trace context of `ctx` (default: the active one) as message or HTTP headers; {} when there is none. */
export function traceHeaders(ctx: Context = context.active()): Record<string, string> {
  const carrier: Record<string, string> = {};
  propagation.inject(ctx, carrier);
  return carrier;
}

/** The context a set of headers carries (a `traceparent`), on top of the active one. */
export function contextFrom(headers: Record<string, string | undefined>): Context {
  return propagation.extract(context.active(), headers);
}

/**
 * Runs `fn` in a new active span (a child of the active context, or of `parent`); the span
 * ends when `fn` settles, with an error status if it throws.
 */
export function inSpan<T>(name: string, opts: { kind?: SpanKind; attributes?: Attributes; parent?: Context }, fn: (span: Span) => Promise<T>): Promise<T> {
  return tracer.startActiveSpan(
    name,
    { kind: opts.kind ?? SpanKind.INTERNAL, ...(opts.attributes ? { attributes: opts.attributes } : {}) },
    opts.parent ?? context.active(),
    async (span) => {
      try {
        return await fn(span);
      } catch (err) {
        span.recordException(err instanceof Error ? err : new Error(errorMessage(err)));
        span.setStatus({ code: SpanStatusCode.ERROR, message: errorMessage(err) });
        throw err;
      } finally {
        span.end();
      }
    },
  );
}

export { SpanKind, SpanStatusCode, trace };
