import { context, propagation, SpanStatusCode, type Attributes, type Tracer } from "@opentelemetry/api";
import { codeName, toConnectError } from "../errors.js";
import { contextWithHandlerSpan } from "../telemetry/with-span.js";

/** A failed request's answer on a stream: the Connect code's name and a message a person can act on. */
export interface StreamFailure {
  readonly code: string;
  readonly message: string;
}

/**
 * Answers one request that arrived on a long-lived stream, server side. The request's work
 * runs in a span `name` of the request's own trace (the context the message carries), which
 * plays a unary call's server span: a `withSpan` the work runs first records on it, and what
 * the work does (SQL, Redis, an audit row) is under it. A failure becomes the request's
 * answer (`failed`), recorded on the span, and never ends the stream.
 */
export function answerInSpan<T>(
  tracer: Tracer,
  name: string,
  attributes: Attributes,
  carrier: { readonly traceparent: string; readonly tracestate: string },
  run: () => Promise<T>,
  failed: (failure: StreamFailure) => T,
): Promise<T> {
  const parent = propagation.extract(context.active(), { traceparent: carrier.traceparent, tracestate: carrier.tracestate });
  return tracer.startActiveSpan(name, { attributes }, parent, (span) =>
    context.with(contextWithHandlerSpan(context.active(), span), async () => {
      try {
        return await run();
      } catch (err) {
        const ce = toConnectError(err);
        span.recordException(ce);
        span.setStatus({ code: SpanStatusCode.ERROR, message: ce.rawMessage });
        return failed({ code: codeName(ce.code), message: ce.rawMessage });
      } finally {
        span.end();
      }
    }),
  );
}
