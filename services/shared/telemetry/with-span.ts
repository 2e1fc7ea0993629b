/**
 * Domain spans: `signing.batch`, `lease.acquire` and the like.
 */
import { SpanStatusCode, context, trace, type Attributes, type Span, type TracerProvider } from "@opentelemetry/api";

/** Name of the tracer the RPC interceptors and `withSpan` use. */
export const tracerName = "keymesh";

/** Options of `withSpan`. */
export interface WithSpanOptions {
  /** Where the span goes; defaults to the global provider. */
  tracerProvider?: TracerProvider;
}

/**
 * Runs `fn` inside a new span that is the active context for everything `fn`
 * does, so queries and calls it makes become children. A thrown error is
 * recorded as an exception, sets the span status to error, and is rethrown
 * unchanged. The span ends when `fn`'s promise settles.
 */
export async function withSpan<T>(
  name: string,
  attributes: Attributes,
  fn: (span: Span) => Promise<T> | T,
  opts: WithSpanOptions = {},
): Promise<T> {
  const tracer = (opts.tracerProvider ?? trace.getTracerProvider()).getTracer(tracerName);
  const span = tracer.startSpan(name, { attributes }, context.active());
  try {
    return await context.with(trace.setSpan(context.active(), span), () => fn(span));
  } catch (e) {
    span.recordException(e instanceof Error ? e : String(e));
    span.setStatus({ code: SpanStatusCode.ERROR, message: e instanceof Error ? e.message : String(e) });
    throw e;
  } finally {
    span.end();
  }
}
