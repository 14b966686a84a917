/**
 * The OpenTelemetry Node SDK, for the entry points only (run-api.ts, run-worker.ts): an OTLP/HTTP
 * trace exporter and W3C trace context. Kept apart from common/tracing.ts, which the typed
 * client imports, so a browser bundle of the client never meets the SDK.
 */
import { markTracing } from './tracing.ts';

export type ServiceName = 'agent-task-queue-api' | 'agent-task-queue-worker';

export interface Tracing {
  shutdown(): Promise<void>;
}

/** Starts the Node SDK when the config asks for it (Config.tracing); loaded on demand, so a process without it pays nothing. */
export async function startTracing(serviceName: ServiceName, opts: { enabled: boolean; serviceName: string | undefined }): Promise<Tracing | undefined> {
  if (!opts.enabled) return undefined;
  const [{ NodeSDK }, { OTLPTraceExporter }] = await Promise.all([import('@opentelemetry/sdk-node'), import('@opentelemetry/exporter-trace-otlp-http')]);
  // OTEL_SERVICE_NAME, when set, wins (the SDK reads it); traces only: no metrics or logs pipeline.
  const sdk = new NodeSDK({
    serviceName: opts.serviceName ?? serviceName,
    traceExporter: new OTLPTraceExporter(),
    instrumentations: [],
    metricReaders: [],
    logRecordProcessors: [],
  });
  sdk.start();
  markTracing();
  return { shutdown: () => sdk.shutdown() };
}
