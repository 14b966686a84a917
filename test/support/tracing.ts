/**
 * In-process tracing for unit tests: a tracer provider with an in-memory exporter, the async
 * context manager and the W3C propagator, registered globally as the Node SDK would, so the
 * product's own spans (common/tracing.ts) are recorded. `uninstall` puts the no-op API back.
 */
import { context, propagation, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { InMemorySpanExporter, SimpleSpanProcessor, TracerProvider, type ReadableSpan } from '@opentelemetry/sdk-trace';
import { markTracing } from '../../common/tracing.ts';

export interface TestTracing {
  spans(): ReadableSpan[];
  uninstall(): Promise<void>;
}

export function installTracing(): TestTracing {
  const exporter = new InMemorySpanExporter();
  const provider = new TracerProvider({ spanProcessors: [new SimpleSpanProcessor({ exporter })] });
  const manager = new AsyncLocalStorageContextManager().enable();
  context.setGlobalContextManager(manager);
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  trace.setGlobalTracerProvider(provider);
  markTracing(true);
  return {
    spans: () => exporter.getFinishedSpans(),
    uninstall: async () => {
      markTracing(false);
      await provider.shutdown();
      trace.disable();
      propagation.disable();
      context.disable();
    },
  };
}
