import type * as http from "node:http";
import * as http2 from "node:http2";
import { Code, createConnectRouter, createContextValues, type ConnectRouter, type ConnectRouterOptions } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import type { Logger } from "pino";
import { peerAddressKey } from "../context.js";
import { GRPC_CONTENT_TYPE, reportMalformedAsInvalid } from "./malformed-requests.js";

/**
 * The Node.js request handler behind the host's port: connect-node's `connectNodeAdapter`
 * serves the routes (with its defaults: gzip and brotli accepted) and answers unknown paths
 * through its `fallback` option. Around it, only what the adapter does not do:
 *
 * - it counts calls in flight so shutdown can wait for them to drain;
 * - while draining, HTTP/1.1 responses carry `Connection: close`;
 * - an HTTP/2 stream answered before its request body was read (oversize message, early
 *   error) is reset with NO_ERROR after the response, so the call does not stay open;
 * - unary requests whose message is not valid protobuf end with InvalidArgument instead of
 *   connect-es's Internal (malformed-requests.ts: the one gap neither the adapter nor an
 *   interceptor can close, see docs/architecture.md).
 */

/** A request from either HTTP server. */
export type NodeRequest = http.IncomingMessage | http2.Http2ServerRequest;
/** A response from either HTTP server. */
export type NodeResponse = http.ServerResponse | http2.Http2ServerResponse;

/** The handler plus its bookkeeping. */
export interface RequestHandler {
  (req: NodeRequest, res: NodeResponse): void;
  /** Calls currently being served. */
  inFlight(): number;
  /** Resolves when no call is in flight (immediately if none is). */
  idle(): Promise<void>;
  /** Marks the server as draining: HTTP/1.1 connections close after their response. */
  drain(): void;
  /** Full RPC paths served, e.g. "/grpc.health.v1.Health/Check". */
  readonly paths: readonly string[];
}

/** Options for `createRequestHandler`: the adapter's router options plus the routes. */
export interface RequestHandlerOptions extends ConnectRouterOptions {
  /** Registers every service (see `createRouteRecorder`). */
  readonly routes: (router: ConnectRouter) => void;
  /** Where requests that cannot even be read are reported. */
  readonly logger: Logger;
}

/**
 * A router for modules that register asynchronously: `connectNodeAdapter` calls its `routes`
 * synchronously, while a module's `register` may await its setup first. Registrations are
 * made on a real router (so mistakes surface at once and `handlers` can be inspected) and
 * replayed into the adapter's router by `routes`.
 */
export function createRouteRecorder(): { readonly router: ConnectRouter; routes(target: ConnectRouter): void } {
  const probe = createConnectRouter();
  const replay: Array<(target: ConnectRouter) => void> = [];
  const router: ConnectRouter = {
    handlers: probe.handlers,
    service(service, implementation, options) {
      probe.service(service, implementation, options);
      replay.push((target) => target.service(service, implementation, options));
      return this;
    },
    rpc(method, impl, options) {
      probe.rpc(method, impl, options);
      replay.push((target) => target.rpc(method, impl, options));
      return this;
    },
  };
  return {
    router,
    routes: (target) => {
      for (const register of replay) register(target);
    },
  };
}

/** Creates the request handler serving the routes through `connectNodeAdapter`. */
export function createRequestHandler(opts: RequestHandlerOptions): RequestHandler {
  const { routes, logger, ...routerOptions } = opts;
  const paths: string[] = [];
  const adapter = connectNodeAdapter({
    ...routerOptions,
    routes(router) {
      routes(router);
      router.handlers.forEach((handler, i) => {
        paths.push(handler.requestPath);
        if (handler.method.methodKind === "unary") router.handlers[i] = reportMalformedAsInvalid(handler);
      });
    },
    fallback: unknownMethod,
    // The caller's address, for limits that count per client (failed logins).
    contextValues: (req) => createContextValues().set(peerAddressKey, req.socket?.remoteAddress ?? ""),
  });

  let active = 0;
  let draining = false;
  let waiters: Array<() => void> = [];
  const finished = () => {
    active--;
    if (active === 0) {
      const w = waiters;
      waiters = [];
      for (const resolve of w) resolve();
    }
  };

  const handle = (req: NodeRequest, res: NodeResponse) => {
    active++;
    res.once("close", finished);
    if ("stream" in req) {
      // An answer sent before the request body was read (an oversize message, an early
      // error) leaves the stream half-open with the client blocked on flow control, and
      // the call would count as in flight forever: once the response is out, reset the
      // stream with NO_ERROR, as HTTP/2 servers do.
      const stream = req.stream;
      // The compat layer sends the trailers from its own 'wantTrailers' listener, registered
      // before this one: resetting after it keeps the trailers ahead of RST_STREAM.
      stream.once("wantTrailers", () => {
        setImmediate(() => {
          if (req.complete || stream.closed) return;
          stream.close(http2.constants.NGHTTP2_NO_ERROR);
          // Node waits for the unread request body before releasing a reset stream.
          stream.destroy();
        });
      });
    }
    if (draining && req.httpVersionMajor === 1) (res as http.ServerResponse).setHeader("connection", "close");
    try {
      adapter(req, res);
    } catch (err) {
      // The adapter cannot make a request of it, e.g. an HTTP/1.0 request without a Host header.
      logger.debug({ err: String(err), url: req.url }, "unreadable request");
      res.statusCode = 400;
      res.end();
    }
  };

  return Object.assign(handle, {
    inFlight: () => active,
    idle: () => (active === 0 ? Promise.resolve() : new Promise<void>((resolve) => waiters.push(resolve))),
    drain: () => {
      draining = true;
    },
    paths: paths.sort(),
  });
}

/** The adapter's fallback for unknown paths: Unimplemented for gRPC, 404 otherwise. */
const unknownMethod: NonNullable<Parameters<typeof connectNodeAdapter>[0]["fallback"]> = (req, res) => {
  const contentType = req.headers["content-type"] ?? "";
  const path = (req.url ?? "").split("?", 1)[0] ?? "";
  if (GRPC_CONTENT_TYPE.test(contentType) && "stream" in req) {
    // A trailers-only gRPC response, as gRPC servers send for unknown methods.
    req.stream.respond(
      {
        ":status": 200,
        "content-type": "application/grpc",
        "grpc-status": String(Code.Unimplemented),
        "grpc-message": encodeURIComponent(`unknown method ${path}`),
      },
      { endStream: true },
    );
    req.resume();
    return;
  }
  res.statusCode = 404;
  res.end();
  req.resume();
};
