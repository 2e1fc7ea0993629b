/**
 * Calls between services of one process, in memory: `createRouterTransport` over the same
 * routes and server interceptors as calls from outside, with the peer clients' interceptors.
 *
 * That transport speaks the Connect protocol, and its errors carry its response headers
 * (content-type…) as metadata. A handler that passes such an error on would repeat them as
 * trailers of its own reply, which breaks it; so they are taken off here, where they appear.
 */
import { ConnectError, createRouterTransport, type ConnectRouter, type ConnectRouterOptions, type Interceptor, type Transport } from "@connectrpc/connect";
import { wrapStream } from "../interceptors/wrap-stream.js";

/** Response headers of a transport, as opposed to an error's own metadata (retry-after…). */
const TRANSPORT_HEADER = /^(content-|connect-|grpc-|accept-encoding$|te$|trailer$|transfer-encoding$|connection$|keep-alive$|date$|server$)/i;

function withoutTransportHeaders(err: unknown): unknown {
  if (!(err instanceof ConnectError)) return err;
  const names: string[] = [];
  err.metadata.forEach((_value, name) => {
    if (TRANSPORT_HEADER.test(name)) names.push(name);
  });
  for (const name of names) err.metadata.delete(name);
  return err;
}

/** Takes the transport's response headers off the errors of in-memory calls, unary or streaming. */
const stripTransportHeaders: Interceptor = (next) => async (req) => {
  try {
    const res = await next(req);
    if (!res.stream) return res;
    return {
      ...res,
      message: wrapStream(res.message, {
        next: (call) => call().catch((err: unknown) => Promise.reject(withoutTransportHeaders(err))),
      }),
    };
  } catch (err) {
    throw withoutTransportHeaders(err);
  }
};

/** The in-memory transport to `routes`, served with `router` options, called with `clientInterceptors`. */
export function createInMemoryTransport(
  routes: (router: ConnectRouter) => void,
  opts: { readonly router: ConnectRouterOptions; readonly clientInterceptors: readonly Interceptor[] },
): Transport {
  return createRouterTransport(routes, {
    router: opts.router,
    transport: { interceptors: [stripTransportHeaders, ...opts.clientInterceptors] },
  });
}
