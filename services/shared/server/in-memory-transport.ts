/**
 * Calls between services of one process, in memory: the same routes and server interceptors as
 * calls from outside, with the peer clients' interceptors, and messages handed over as copies
 * instead of being encoded, framed and parsed again.
 *
 * What a call over the network gives, it gives too:
 * - the callee sees a message of its own: requests and replies are deep copies (bytes
 *   included), so neither side can change what the other holds, and a buffer the caller wipes
 *   or reuses afterwards does not change the callee's copy;
 * - the client's interceptors (credentials, tracing) and the server's (identity, call limits,
 *   validation, logging, metrics) run as for any call, with the client's deadline and
 *   cancellation reaching the handler's context;
 * - an error reaches the caller as a new ConnectError carrying only what a remote caller would
 *   receive (code, message, details, metadata and the response headers and trailers set by the
 *   handler): never the callee's stack or `cause`.
 *
 * What it does not do is check that a message could be encoded: callers are this process's own
 * services, built from the same generated code, and messages from outside the process keep
 * arriving through the HTTP listener with its limits.
 */
import { create, isMessage, type DescField, type DescMessage, type DescMethod, type DescMethodStreaming, type DescMethodUnary, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  createContextValues,
  createHandlerContext,
  createMethodImplSpec,
  createServiceImplSpec,
  type ConnectRouter,
  type ConnectRouterOptions,
  type ContextValues,
  type HandlerContext,
  type Interceptor,
  type MethodImplSpec,
  type StreamResponse,
  type Transport,
  type UnaryResponse,
} from "@connectrpc/connect";
import { createMethodUrl, invokeUnaryImplementation, runStreamingCall, runUnaryCall, transformInvokeImplementation } from "@connectrpc/connect/protocol";
import { untilAborted } from "../until-aborted.js";

/** The base of the URLs in-memory calls carry (server interceptors and logs see a URL as usual). */
const BASE_URL = "http://in-memory";

/** A method's implementation and the server interceptors it runs under. */
interface Route {
  readonly spec: MethodImplSpec;
  readonly interceptors: Interceptor[];
}

/** The in-memory transport to `routes`, served with `router` options, called with `clientInterceptors`. */
export function createInMemoryTransport(
  routes: (router: ConnectRouter) => void,
  opts: { readonly router: ConnectRouterOptions; readonly clientInterceptors: readonly Interceptor[] },
): Transport {
  const table = routeTable(routes, opts.router.interceptors ?? []);
  const clientInterceptors = [...opts.clientInterceptors];

  // As connect's own transports: a timeout of 0 or less means no deadline.
  const deadlineOf = (timeoutMs: number | undefined) => (timeoutMs !== undefined && timeoutMs <= 0 ? undefined : timeoutMs);

  /** The fields of a request of either kind, as a client over the network would send them. */
  const requestOf = <M extends DescMethod>(method: M, header: ConstructorParameters<typeof Headers>[0], contextValues: ContextValues | undefined) => ({
    service: method.parent,
    method,
    requestMethod: "POST",
    url: createMethodUrl(BASE_URL, method),
    header: new Headers(header),
    contextValues: contextValues ?? createContextValues(),
  });

  /** A call arriving at the server: its route and its handler's context. */
  const arrive = (req: { method: DescMethod; url: string; signal: AbortSignal; header: Headers }, timeoutMs: number | undefined) => {
    const route = table.get(pathOf(req.method));
    if (!route) throw new ConnectError(`${pathOf(req.method)} is not served in this process`, Code.Unimplemented);
    const context = createHandlerContext({
      service: req.method.parent,
      method: req.method,
      protocolName: "in-memory",
      requestMethod: "POST",
      url: req.url,
      timeoutMs,
      shutdownSignal: opts.router.shutdownSignal,
      requestSignal: req.signal,
      // The server reads its own copy of the headers, as if they had crossed the wire.
      requestHeader: new Headers(req.header),
      contextValues: createContextValues(),
    });
    return { route, context };
  };

  return {
    async unary<I extends DescMessage, O extends DescMessage>(
      method: DescMethodUnary<I, O>,
      signal: AbortSignal | undefined,
      timeoutMs: number | undefined,
      header: ConstructorParameters<typeof Headers>[0],
      input: MessageInitShape<I>,
      contextValues?: ContextValues,
    ): Promise<UnaryResponse<I, O>> {
      timeoutMs = deadlineOf(timeoutMs);
      return runUnaryCall({
        interceptors: clientInterceptors,
        signal,
        timeoutMs,
        req: { stream: false, ...requestOf(method, header, contextValues), message: input },
        next: async (req) => {
          const { route, context } = arrive(req, timeoutMs);
          try {
            const spec = route.spec as MethodImplSpec<I, O> & { kind: "unary" };
            // Like a client over the network, the caller stops waiting when its call is cancelled
            // or its deadline passes, whether or not the handler has noticed yet.
            const reply = await untilAborted(invokeUnaryImplementation(spec, context, copyMessage(method.input, req.message), route.interceptors), req.signal);
            return {
              stream: false as const,
              service: method.parent,
              method,
              header: new Headers(context.responseHeader),
              trailer: new Headers(context.responseTrailer),
              message: copyMessage(method.output, reply),
            };
          } catch (err) {
            throw asReceived(err, context);
          } finally {
            context.abort();
          }
        },
      });
    },

    async stream<I extends DescMessage, O extends DescMessage>(
      method: DescMethodStreaming<I, O>,
      signal: AbortSignal | undefined,
      timeoutMs: number | undefined,
      header: ConstructorParameters<typeof Headers>[0],
      input: AsyncIterable<MessageInitShape<I>>,
      contextValues?: ContextValues,
    ): Promise<StreamResponse<I, O>> {
      timeoutMs = deadlineOf(timeoutMs);
      return runStreamingCall({
        interceptors: clientInterceptors,
        signal,
        timeoutMs,
        req: { stream: true, ...requestOf(method, header, contextValues), message: input },
        next: async (req) => {
          const { route, context } = arrive(req, timeoutMs);
          const requests = mapIterable(req.message, (m) => copyMessage(method.input, m));
          const replies = transformInvokeImplementation(route.spec as MethodImplSpec<I, O>, context, route.interceptors)(requests);
          const trailer = new Headers();
          return {
            stream: true as const,
            service: method.parent,
            method,
            // Filled as the handler answers, like headers that arrive with the first reply.
            header: context.responseHeader,
            trailer,
            message: (async function* () {
              try {
                const it = replies[Symbol.asyncIterator]();
                for (;;) {
                  const next = await untilAborted(it.next(), req.signal);
                  if (next.done === true) break;
                  yield copyMessage(method.output, next.value);
                }
                context.responseTrailer.forEach((value, key) => trailer.append(key, value));
              } catch (err) {
                throw asReceived(err, context);
              } finally {
                context.abort();
              }
            })(),
          };
        },
      });
    },
  };
}

/** `service/method`, the key of the route table (a method's URL path without the slash). */
const pathOf = (method: DescMethod) => `${method.parent.typeName}/${method.name}`;

/**
 * The routes as registered, by method path: each method's implementation with the server
 * interceptors it runs under (the router's, or those its registration gave instead, as
 * `createConnectRouter` does).
 */
function routeTable(routes: (router: ConnectRouter) => void, interceptors: readonly Interceptor[]): Map<string, Route> {
  const table = new Map<string, Route>();
  const add = (spec: MethodImplSpec, options?: Partial<ConnectRouterOptions>) => {
    table.set(pathOf(spec.method), { spec, interceptors: [...(options?.interceptors ?? interceptors)] });
  };
  const recorder: ConnectRouter = {
    handlers: [],
    service(service, implementation, options) {
      for (const spec of Object.values(createServiceImplSpec(service, implementation).methods)) add(spec, options);
      return recorder;
    },
    rpc(method, implementation, options) {
      add(createMethodImplSpec(method, implementation), options);
      return recorder;
    },
  };
  routes(recorder);
  return table;
}

/**
 * What a remote caller of the failed call would receive: a new ConnectError with the code,
 * message, details and metadata (plus the handler's response headers and trailers), without
 * the stack or cause of the error thrown on the server side.
 */
function asReceived(err: unknown, context: HandlerContext): ConnectError {
  const thrown = ConnectError.from(err);
  const metadata = new Headers(context.responseHeader);
  context.responseTrailer.forEach((value, key) => metadata.append(key, value));
  thrown.metadata.forEach((value, key) => metadata.append(key, value));
  const received = new ConnectError(thrown.rawMessage, thrown.code, metadata);
  received.details.push(...thrown.details);
  return received;
}

async function* mapIterable<T, U>(items: AsyncIterable<T>, fn: (item: T) => U): AsyncGenerator<U> {
  for await (const item of items) yield fn(item);
}

/**
 * A deep copy of a message of `desc` (an init shape is made a message first). Bytes are
 * copied too: `clone` would not copy them when they are a Buffer, whose `slice` shares memory.
 */
export function copyMessage<D extends DescMessage>(desc: D, message: MessageShape<D> | MessageInitShape<D>): MessageShape<D> {
  const source = (isMessage(message, desc) ? message : create(desc, message)) as unknown as Record<string, unknown>;
  const out: Record<string, unknown> = { ...source };
  for (const member of desc.members) {
    const value = source[member.localName];
    if (value === undefined) continue;
    if (member.kind === "oneof") {
      const selected = value as { case?: string; value?: unknown };
      const field = member.fields.find((f) => f.localName === selected.case);
      out[member.localName] = field ? { case: selected.case, value: copyValue(field, selected.value) } : { case: undefined };
    } else {
      out[member.localName] = copyField(member, value);
    }
  }
  return out as unknown as MessageShape<D>;
}

function copyField(field: DescField, value: unknown): unknown {
  switch (field.fieldKind) {
    case "list":
      return (value as unknown[]).map((item) => copyItem(field.listKind === "message" ? field.message : undefined, item));
    case "map": {
      const out: Record<string, unknown> = {};
      for (const [key, item] of Object.entries(value as Record<string, unknown>)) out[key] = copyItem(field.mapKind === "message" ? field.message : undefined, item);
      return out;
    }
    default:
      return copyValue(field, value);
  }
}

function copyValue(field: DescField, value: unknown): unknown {
  return copyItem(field.fieldKind === "message" ? field.message : undefined, value);
}

/** One value: a message copied (wrapper types arrive unboxed, as primitives), bytes copied. */
function copyItem(message: DescMessage | undefined, value: unknown): unknown {
  if (value instanceof Uint8Array) return Uint8Array.prototype.slice.call(value);
  if (message !== undefined && typeof value === "object" && value !== null) return copyMessage(message, value as MessageShape<DescMessage>);
  return value;
}
