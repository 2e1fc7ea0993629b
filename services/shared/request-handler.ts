import type * as http from "node:http";
import * as http2 from "node:http2";
import { Code, ConnectError, createConnectRouter, createContextValues, type ConnectRouter, type ConnectRouterOptions } from "@connectrpc/connect";
import { compressionBrotli, compressionGzip, universalRequestFromNodeRequest, universalResponseToNodeResponse } from "@connectrpc/connect-node";
import type { UniversalHandler } from "@connectrpc/connect/protocol";
import type { Logger } from "pino";
import { peerKey } from "./context.js";
import { codeName } from "./errors.js";
import { GRPC_CONTENT_TYPE, reportMalformedAsInvalid } from "./malformed-requests.js";

/**
 * The Node.js request handler behind the host's port: connect-es's router served the way
 * `connectNodeAdapter` does, plus what a long-running server needs around it:
 *
 * - it counts calls in flight so shutdown can wait for them to drain;
 * - while draining, HTTP/1.1 responses carry `Connection: close`;
 * - an HTTP/2 stream answered before its request body was read (oversize message, early
 *   error) is reset with NO_ERROR after the response, so the call does not stay open;
 * - unknown methods answer gRPC clients with a proper Unimplemented status (not a bare 404);
 * - unary requests whose message is not valid protobuf end with InvalidArgument instead of
 *   connect-es's Internal (see malformed-requests.ts).
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

/** Options for `createRequestHandler`. */
export interface RequestHandlerOptions {
  /** The router with every service registered (see `createHostRouter`). */
  readonly router: ConnectRouter;
  /** Where unexpected handler failures are reported. */
  readonly logger: Logger;
}

/**
 * Creates a router the way `connectNodeAdapter` does (gzip and brotli accepted), with the
 * given options (interceptors, limits, shutdown signal).
 */
export function createHostRouter(options: ConnectRouterOptions): ConnectRouter {
  return createConnectRouter({ acceptCompression: [compressionGzip, compressionBrotli], ...options });
}

/** Creates the request handler serving a router's services. */
export function createRequestHandler(opts: RequestHandlerOptions): RequestHandler {
  const { router, logger } = opts;
  const handlers = new Map<string, UniversalHandler>(router.handlers.map((h) => [h.requestPath, h]));

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
    const path = (req.url ?? "").split("?", 1)[0] ?? "";
    const uHandler = handlers.get(path);
    if (uHandler === undefined) {
      notFound(req, res, path);
      return;
    }
    const contentType = req.headers["content-type"] ?? "";
    let uReq;
    try {
      uReq = universalRequestFromNodeRequest(req, res, undefined, peerValues(req));
    } catch {
      // e.g. an HTTP/1.0 request without a Host header
      res.statusCode = 400;
      res.end();
      return;
    }
    uHandler(uReq)
      .then((uRes) => (uHandler.method.methodKind === "unary" ? reportMalformedAsInvalid(uRes, contentType) : uRes))
      .then((uRes) => universalResponseToNodeResponse(uRes, res))
      .catch((reason: unknown) => {
        const code = ConnectError.from(reason).code;
        // Aborted/Canceled: the client went away; the interceptors have logged the call.
        if (code === Code.Aborted || code === Code.Canceled) return;
        logger.error({ service: uHandler.service.typeName, method: uHandler.method.name, code: codeName(code), err: String(reason) }, "response failed");
        if (!res.headersSent) {
          res.statusCode = 500;
          res.end();
        }
      });
  };

  return Object.assign(handle, {
    inFlight: () => active,
    idle: () => (active === 0 ? Promise.resolve() : new Promise<void>((resolve) => waiters.push(resolve))),
    drain: () => {
      draining = true;
    },
    paths: [...handlers.keys()].sort(),
  });
}

/** Answers a request for an unknown path: Unimplemented for gRPC, 404 otherwise. */
function notFound(req: NodeRequest, res: NodeResponse, path: string): void {
  const contentType = req.headers["content-type"] ?? "";
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
}

/** The caller's address as a context value, for handlers that record it (the audit trail). */
function peerValues(req: NodeRequest) {
  const socket = req.socket as { remoteAddress?: string; remotePort?: number } | undefined;
  const address = socket?.remoteAddress;
  return createContextValues().set(peerKey, address === undefined ? "" : `${address}:${socket?.remotePort ?? 0}`);
}
