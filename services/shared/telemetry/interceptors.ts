/**
 * Tracing interceptors for Connect servers and clients, after
 * connectrpc/otelconnect-go: one span per call named
 * `keymesh.vault.v1.VaultService/GetSecret`, with `rpc.system`,
 * `rpc.service`, `rpc.method`, `rpc.grpc.status_code` (the numeric Connect
 * code, 0 on success) and a `message` event (`message.type` SENT/RECEIVED,
 * `message.id`) per message. W3C trace context and baggage travel in the
 * request headers: the client injects them, the server extracts them.
 *
 * Streams are wrapped without changing their `return`/`throw` behaviour
 * (the connectrpc/validate-es pattern); the span ends when the response
 * stream finishes, fails, is closed early by its consumer, or the call's
 * signal aborts, whichever comes first.
 */
import type { Interceptor, StreamRequest, UnaryRequest } from "@connectrpc/connect";
import {
  context,
  propagation,
  SpanKind,
  trace,
  type Context,
  type Link,
  type SpanOptions,
  type TextMapPropagator,
  type Tracer,
  type TracerProvider,
} from "@opentelemetry/api";
import { RpcSpan, detectRpcSystem, headerGetter, headerSetter, rpcAttributes, type RpcSide, type RpcSystem } from "./rpc-span.js";
import { contextWithServiceName, meshServiceName } from "./service-name.js";
import { wrapStream } from "../interceptors/wrap-stream.js";
import { contextWithHandlerSpan, tracerName } from "./with-span.js";

/** Domain spans live next to the RPC interceptors for handlers' convenience. */
export { tracerName, withSpan, type WithSpanOptions } from "./with-span.js";

/** Options shared by the server and the client interceptor. */
export interface TracingInterceptorOptions {
  /** Where spans go; defaults to the global provider installed by the preload. */
  tracerProvider?: TracerProvider;
  /** How context crosses the wire; defaults to the global W3C trace context + baggage. */
  propagator?: TextMapPropagator;
  /** Return false to leave a call untraced (health probes, reflection). */
  filter?: (req: UnaryRequest | StreamRequest) => boolean;
  /** Skip the per-message `message` events; the counts are still recorded. */
  omitMessageEvents?: boolean;
}

/** Options of the client interceptor. */
export interface ClientTracingInterceptorOptions extends TracingInterceptorOptions {
  /**
   * Which unary calls get a client span. "all" (the default) for callers outside the mesh.
   * "failures" for calls between mesh services, whose server span records the call: the
   * client span would repeat it (same name, same code, the same work), doubling every RPC in
   * a signing batch's trace. A successful call then has no client span, and the server span
   * is a child of the caller's span; a failed call is recorded as a client span afterwards
   * (from the call's start), so a call that never reached its server stays in the trace.
   * Streams always get a client span.
   */
  clientSpans?: "all" | "failures";
}

/** Options of the server interceptor. */
export interface ServerTracingInterceptorOptions extends TracingInterceptorOptions {
  /**
   * Make the caller's span the parent of the server span. True by default:
   * callers inside the mesh are trusted. When false the server span starts a
   * new trace and links to the caller's span instead.
   */
  trustRemote?: boolean;
}

/**
 * Creates the server-side interceptor. The server span is the active context
 * while the handler runs, including inside a response stream, so spans the
 * handler starts (knex, ioredis, `withSpan`) become its children. A keymesh
 * service's calls are recorded as that service's (`keymesh-keys` for
 * `keymesh.keys.v1.*`; see service-name.ts), the caller's client span as the
 * caller's.
 */
export function createTracingInterceptor(opts: ServerTracingInterceptorOptions = {}): Interceptor {
  return createRpcTracing("server", opts, opts.trustRemote ?? true);
}

/**
 * Creates the client-side interceptor: a client span around each call, whose
 * context is injected into the request headers.
 */
export function createClientTracingInterceptor(opts: ClientTracingInterceptorOptions = {}): Interceptor {
  return createRpcTracing("client", opts, true);
}

function createRpcTracing(side: RpcSide, opts: ClientTracingInterceptorOptions, trustRemote: boolean): Interceptor {
  const events = !(opts.omitMessageEvents ?? false);
  // Requests are sent by the client and received by the server; responses the other way round.
  const [requestType, responseType] = side === "client" ? (["SENT", "RECEIVED"] as const) : (["RECEIVED", "SENT"] as const);
  return (next) => async (req) => {
    if (opts.filter && !opts.filter(req)) return next(req);
    const propagator = opts.propagator ?? propagation;
    const tracer = (opts.tracerProvider ?? trace.getTracerProvider()).getTracer(tracerName);
    const system = detectRpcSystem(req.header, req.requestMethod);
    const spanOptions: SpanOptions = {
      kind: side === "client" ? SpanKind.CLIENT : SpanKind.SERVER,
      attributes: rpcAttributes(system, req.service.typeName, req.method.name),
    };
    let parent = context.active();
    if (side === "client" && !req.stream && opts.clientSpans === "failures") {
      return traceFailureOnly(req, next, { tracer, propagator, spanOptions, system, events, parent });
    }
    if (side === "server") {
      parent = propagator.extract(parent, req.header, headerGetter);
      // The called service names this span and everything the handler starts.
      const service = meshServiceName(req.service.typeName);
      if (service !== undefined) parent = contextWithServiceName(parent, service);
      if (!trustRemote) parent = asNewRoot(parent, spanOptions);
    }
    const span = tracer.startSpan(`${req.service.typeName}/${req.method.name}`, spanOptions, parent);
    if (!span.isRecording() && !trace.isSpanContextValid(span.spanContext())) {
      // No SDK (the no-op API): nothing to record or propagate, so add no wrapping either.
      return next(req);
    }
    const spanContext = trace.setSpan(parent, span);
    if (side === "client") propagator.inject(spanContext, req.header, headerSetter);
    // A unary handler's own withSpan records on this span (with-span.ts); a stream's work is many.
    const ctx = side === "server" && !req.stream ? contextWithHandlerSpan(spanContext, span) : spanContext;
    const rpc = new RpcSpan(span, side, system, events);

    if (!req.stream) {
      rpc.message(requestType);
      try {
        const res = await context.with(ctx, () => next(req));
        rpc.message(responseType);
        rpc.end({ kind: "ok" });
        return res;
      } catch (e) {
        rpc.end({ kind: "error", error: e });
        throw e;
      }
    }

    endOnAbort(rpc, req.signal);
    let res;
    try {
      res = await context.with(ctx, () =>
        next({ ...req, message: wrapStream(req.message, { within: inContext(ctx), message: (m) => (rpc.message(requestType), m) }) }),
      );
    } catch (e) {
      rpc.end({ kind: "error", error: e });
      throw e;
    }
    if (!res.stream) {
      // Not produced by Connect for streaming methods; keep the books straight anyway.
      rpc.end({ kind: "ok" });
      return res;
    }
    return {
      ...res,
      message: wrapStream(res.message, {
        within: inContext(ctx),
        message: (m) => (rpc.message(responseType), m),
        end: (outcome) => rpc.end(outcome),
      }),
    };
  };
}

/**
 * A unary client call that gets a span only when it fails: the caller's context goes out in
 * the headers (the server span becomes the caller's child), and a failure is recorded as a
 * client span that starts when the call did.
 */
async function traceFailureOnly(
  req: UnaryRequest,
  next: Parameters<Interceptor>[0],
  t: { tracer: Tracer; propagator: TextMapPropagator; spanOptions: SpanOptions; system: RpcSystem; events: boolean; parent: Context },
) {
  t.propagator.inject(t.parent, req.header, headerSetter);
  const startTime = Date.now();
  try {
    return await next(req);
  } catch (e) {
    const span = t.tracer.startSpan(`${req.service.typeName}/${req.method.name}`, { ...t.spanOptions, startTime }, t.parent);
    const rpc = new RpcSpan(span, "client", t.system, t.events);
    rpc.message("SENT");
    rpc.end({ kind: "error", error: e });
    throw e;
  }
}

/** Runs calls inside `ctx`: an async generator's body runs inside them, so a handler's stream sees its RPC span. */
function inContext(ctx: Context) {
  return <R>(call: () => R): R => context.with(ctx, call);
}

/** Starts the span as a new trace that links to the remote caller's span. */
function asNewRoot(parent: Context, spanOptions: SpanOptions): Context {
  const remote = trace.getSpanContext(parent);
  if (remote !== undefined && trace.isSpanContextValid(remote)) {
    const link: Link = { context: remote };
    spanOptions.links = [link];
  }
  spanOptions.root = true;
  // Baggage stays: only the parent is dropped.
  return trace.deleteSpan(parent);
}

/** Ends a stream's span when the call is cancelled or times out while nobody reads. */
function endOnAbort(rpc: RpcSpan, signal: AbortSignal): void {
  const onAbort = () => rpc.end({ kind: "error", error: signal.reason });
  if (signal.aborted) return;
  signal.addEventListener("abort", onAbort, { once: true });
  rpc.onEnd(() => signal.removeEventListener("abort", onAbort));
}
