/**
 * One span per Redlock operation instead of one per Redis command.
 *
 * Redlock runs its acquire, extend and release scripts on every node of the quorum (EVALSHA,
 * and EVAL when a node lacks the script), and the ioredis instrumentation records each as a
 * span named `evalsha`: three nodes make three or more spans that say only "a script ran".
 * `redlockSpan` records the operation once, under its own name, with the lease's resource
 * and the outcome, and suppresses the per-command spans beneath it.
 */
import { INVALID_SPAN_CONTEXT, SpanKind, SpanStatusCode, context, trace, type Attributes, type Span } from "@opentelemetry/api";
import { suppressTracing } from "@opentelemetry/core";
import { tracerName } from "./with-span.js";

/** The Redlock operations recorded. */
export type RedlockOperation = "acquire" | "extend" | "release";

/**
 * Runs `fn` (one Redlock operation over `nodes` Redis nodes) inside a `redlock.<operation>`
 * client span. Redis commands `fn` sends make no spans of their own. `fn` may add attributes
 * (the outcome) to the span; a thrown error marks it failed.
 */
export async function redlockSpan<T>(operation: RedlockOperation, attributes: Attributes, fn: (span: Span) => Promise<T>): Promise<T> {
  const active = context.active();
  if (trace.getSpan(active) === undefined) return fn(trace.wrapSpanContext(INVALID_SPAN_CONTEXT));
  const span = trace.getTracer(tracerName).startSpan(
    `redlock.${operation}`,
    { kind: SpanKind.CLIENT, attributes: { "db.system.name": "redis", "db.system": "redis", "db.operation.name": `redlock.${operation}`, ...attributes } },
    active,
  );
  try {
    return await context.with(suppressTracing(trace.setSpan(active, span)), () => fn(span));
  } catch (e) {
    span.recordException(e instanceof Error ? e : String(e));
    span.setStatus({ code: SpanStatusCode.ERROR, message: e instanceof Error ? e.message : String(e) });
    throw e;
  } finally {
    span.end();
  }
}
