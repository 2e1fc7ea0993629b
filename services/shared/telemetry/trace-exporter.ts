/**
 * The span exporter the SDK feeds: OTLP over the protocol chosen by the OTEL_* variables, or
 * the console, wrapped so that a collector that cannot be reached is reported once instead of
 * dropping spans in silence.
 */
import { ExportResultCode, type ExportResult } from "@opentelemetry/core";
import type { ReadableSpan, SpanExporter } from "@opentelemetry/sdk-trace-base";

/** Receives the one warning about failed exports. */
export type ExportWarning = (fields: { endpoint: string; protocol: string; error: string }, message: string) => void;

/**
 * Where OTLP traces go for an exporter kind, as the exporters resolve it: the traces endpoint
 * as given, or the base endpoint plus `/v1/traces` for OTLP/HTTP.
 */
export function traceEndpoint(protocol: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  const traces = env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT?.trim();
  if (traces) return traces;
  const base = env.OTEL_EXPORTER_OTLP_ENDPOINT?.trim();
  if (!base) return undefined;
  return protocol === "grpc" ? base : `${base.replace(/\/+$/, "")}/v1/traces`;
}

/** Creates the exporter for `kind` ("console", "grpc", "http/json" or "http/protobuf"). */
export async function createTraceExporter(kind: string): Promise<SpanExporter> {
  switch (kind) {
    case "console": {
      const { ConsoleSpanExporter } = await import("@opentelemetry/sdk-trace-base");
      return new ConsoleSpanExporter();
    }
    case "grpc": {
      const { OTLPTraceExporter } = await import("@opentelemetry/exporter-trace-otlp-grpc");
      return new OTLPTraceExporter();
    }
    case "http/json": {
      const { OTLPTraceExporter } = await import("@opentelemetry/exporter-trace-otlp-http");
      return new OTLPTraceExporter();
    }
    default: {
      const { OTLPTraceExporter } = await import("@opentelemetry/exporter-trace-otlp-proto");
      return new OTLPTraceExporter();
    }
  }
}

/**
 * Wraps `inner` so that the first failed export calls `warn` with the endpoint and the error.
 * Later failures stay quiet until an export succeeds again, so an endpoint that is down
 * produces one line, not one per batch.
 */
export function warnOnExportFailure(inner: SpanExporter, target: { endpoint: string; protocol: string }, warn: ExportWarning): SpanExporter {
  let warned = false;
  return {
    export(spans: ReadableSpan[], done: (result: ExportResult) => void): void {
      inner.export(spans, (result) => {
        if (result.code === ExportResultCode.SUCCESS) {
          warned = false;
        } else if (!warned) {
          warned = true;
          warn(
            { ...target, error: result.error?.message ?? "export failed" },
            "cannot export traces: spans are dropped until the OTLP endpoint answers",
          );
        }
        done(result);
      });
    },
    shutdown: () => inner.shutdown(),
    forceFlush: () => inner.forceFlush?.() ?? Promise.resolve(),
  };
}
