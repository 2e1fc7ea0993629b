import { isSpanContextValid, trace } from "@opentelemetry/api";
import pino, { type DestinationStream, type Logger } from "pino";
import type { LogLevel } from "./config.js";

export type { Logger } from "pino";

/** Options for `createLogger`. */
export interface LoggerOptions {
  /** Minimum level written (default info). */
  readonly level?: LogLevel;
  /** Where lines go (default: standard output, written synchronously so nothing is lost at exit). */
  readonly destination?: DestinationStream;
  /** Fields added to every line. */
  readonly base?: Record<string, unknown>;
}

/**
 * Creates the process logger: one JSON object per line (pino), ISO timestamps, level names
 * instead of numbers, and `trace_id`/`span_id` on every line written inside a traced call, so a
 * line leads to its trace in Jaeger. Never log message contents, secrets or tokens through it.
 */
export function createLogger(opts: LoggerOptions = {}): Logger {
  return pino(
    {
      level: opts.level ?? "info",
      base: { pid: process.pid, ...opts.base },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      mixin: traceFields,
      redact: { paths: ["authorization", "*.authorization", "token", "*.token", "password", "*.password"], censor: "***" },
    },
    opts.destination ?? pino.destination({ dest: 1, sync: true }),
  );
}

/** The active span's ids, or nothing outside a trace (and always nothing without the SDK). */
export function traceFields(): Record<string, string> {
  const span = trace.getActiveSpan();
  if (span === undefined) return {};
  const ctx = span.spanContext();
  return isSpanContextValid(ctx) ? { trace_id: ctx.traceId, span_id: ctx.spanId } : {};
}
