/**
 * Domain spans: `signing.batch`, `lease.acquire` and the like.
 */
import { SpanStatusCode, context, createContextKey, trace, type Attributes, type Context, type Span, type TracerProvider } from "@opentelemetry/api";

/** Name of the tracer the RPC interceptors and `withSpan` use. */
export const tracerName = "keymesh";

/** Options of `withSpan`. */
export interface WithSpanOptions {
  /** Where the span goes; defaults to the global provider. */
  tracerProvider?: TracerProvider;
}

/** The server span of the RPC whose handler runs, until a `withSpan` has folded into it. */
interface HandlerSpan {
  readonly span: Span;
  folded: boolean;
}

const handlerSpanKey = createContextKey("keymesh.rpc.handler-span");

/** `ctx` in which the first `withSpan` run directly by the handler records on `span` (the server interceptor's). */
export function contextWithHandlerSpan(ctx: Context, span: Span): Context {
  const holder: HandlerSpan = { span, folded: false };
  return ctx.setValue(handlerSpanKey, holder);
}

/**
 * Runs `fn` inside a new span that is the active context for everything `fn`
 * does, so queries and calls it makes become children. A thrown error is
 * recorded as an exception, sets the span status to error, and is rethrown
 * unchanged. The span ends when `fn`'s promise settles.
 *
 * Run directly by a unary RPC handler (the active span is the call's server span), the first
 * `withSpan` is the handler's whole work: a child would repeat the server span with the same
 * duration. It records on the server span instead: its attributes, `keymesh.operation` set
 * to `name`, a thrown error as an exception event (the interceptor sets the status from the
 * call's code). `fn` gets the server span. Later and nested `withSpan`s start spans.
 */
export async function withSpan<T>(
  name: string,
  attributes: Attributes,
  fn: (span: Span) => Promise<T> | T,
  opts: WithSpanOptions = {},
): Promise<T> {
  const active = context.active();
  const handler = active.getValue(handlerSpanKey) as HandlerSpan | undefined;
  if (handler !== undefined && !handler.folded && trace.getSpan(active) === handler.span) {
    handler.folded = true;
    handler.span.setAttributes({ ...attributes, "keymesh.operation": name });
    try {
      return await fn(handler.span);
    } catch (e) {
      handler.span.recordException(e instanceof Error ? e : String(e));
      throw e;
    }
  }
  const tracer = (opts.tracerProvider ?? trace.getTracerProvider()).getTracer(tracerName);
  const span = tracer.startSpan(name, { attributes }, active);
  try {
    return await context.with(trace.setSpan(active, span), () => fn(span));
  } catch (e) {
    span.recordException(e instanceof Error ? e : String(e));
    span.setStatus({ code: SpanStatusCode.ERROR, message: e instanceof Error ? e.message : String(e) });
    throw e;
  } finally {
    span.end();
  }
}
