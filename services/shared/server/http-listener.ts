import * as http from "node:http";
import * as http2 from "node:http2";
import * as net from "node:net";
import type { AddressInfo } from "node:net";
import type { NodeRequest, NodeResponse } from "./adapter.js";
import { MESH_HTTP2_SETTINGS, widenConnectionWindow } from "../http2-flow.js";

/**
 * One port for every protocol.
 *
 * With TLS, `http2.createSecureServer({ allowHTTP1: true })` negotiates HTTP/2 or HTTP/1.1
 * through ALPN. Without TLS there is no negotiation: gRPC clients speak HTTP/2 with "prior
 * knowledge" (h2c) while curl, browsers and `fetch` speak HTTP/1.1, and `http2.createServer`
 * alone only understands the former. So a plain `net.Server` accepts each connection, reads
 * its first bytes and compares them with the HTTP/2 connection preface
 * (`PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`): a match hands the socket to an HTTP/2 server, anything
 * else to an HTTP/1.1 server, with the bytes already read put back first (`unshift`; Node's
 * HTTP/2 session picks up data buffered on the socket when it starts).
 */

/** What the listener needs to know. */
export interface ListenOptions {
  readonly host: string;
  readonly port: number;
  /** PEM certificate chain and key; unset serves cleartext (h2c + HTTP/1.1). */
  readonly tls?: { readonly cert: string | Buffer; readonly key: string | Buffer };
  /** Serves every request, HTTP/1.1 and HTTP/2 alike. */
  readonly handler: (req: NodeRequest, res: NodeResponse) => void;
  /** How long a new connection may stay silent before it is dropped (default 60 s, like Node's headersTimeout). */
  readonly prefaceTimeoutMs?: number;
}

/** A listening server. */
export interface HttpListener {
  /** The bound port (useful with port 0). */
  readonly port: number;
  /** The bound address. */
  readonly address: string;
  /** Stops accepting connections; HTTP/2 clients get GOAWAY, open calls continue. */
  stopAccepting(): void;
  /** Destroys every remaining connection and resolves once the server has closed. */
  destroy(): Promise<void>;
}

const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");

/** Starts listening; resolves once the port is bound. */
export async function listen(opts: ListenOptions): Promise<HttpListener> {
  const sockets = new Set<net.Socket>();
  const sessions = new Set<http2.Http2Session>();
  let accepting = true;

  const track = (socket: net.Socket) => {
    sockets.add(socket);
    // Errors of a connection (resets, bad TLS) concern only that connection.
    socket.on("error", () => undefined);
    socket.once("close", () => sockets.delete(socket));
  };
  const trackSession = (session: http2.Http2Session) => {
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
    widenConnectionWindow(session);
    // A session arriving while we drain is told to go away at once.
    if (!accepting) session.close();
  };

  let server: net.Server;
  if (opts.tls !== undefined) {
    const secure = http2.createSecureServer({ allowHTTP1: true, cert: opts.tls.cert, key: opts.tls.key, settings: MESH_HTTP2_SETTINGS }, opts.handler);
    secure.on("connection", track);
    secure.on("session", trackSession);
    server = secure;
  } else {
    const h1 = http.createServer(opts.handler);
    const h2 = http2.createServer({ settings: MESH_HTTP2_SETTINGS }, opts.handler);
    h2.on("session", trackSession);
    const prefaceTimeoutMs = opts.prefaceTimeoutMs ?? 60_000;
    server = net.createServer((socket) => {
      track(socket);
      sniff(socket, prefaceTimeoutMs, (isHttp2) => {
        if (isHttp2) h2.emit("connection", socket);
        else {
          h1.emit("connection", socket);
          socket.resume();
        }
      });
    });
  }
  server.on("error", () => undefined);

  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error) => reject(err);
    server.once("error", onError);
    server.listen(opts.port, opts.host, () => {
      server.off("error", onError);
      resolve();
    });
  });
  const bound = server.address() as AddressInfo;
  const closed = new Promise<void>((resolve) => server.once("close", () => resolve()));

  const stopAccepting = () => {
    if (!accepting) return;
    accepting = false;
    server.close();
    for (const session of sessions) session.close();
  };
  return {
    port: bound.port,
    address: bound.address,
    stopAccepting,
    async destroy() {
      stopAccepting();
      for (const session of sessions) session.destroy();
      for (const socket of sockets) socket.destroy();
      await closed;
    },
  };
}

/** Reads until the first bytes tell HTTP/2 from HTTP/1.1, then puts them back and decides. */
function sniff(socket: net.Socket, timeoutMs: number, decide: (isHttp2: boolean) => void): void {
  let seen: Buffer = Buffer.alloc(0);
  const timer = setTimeout(() => socket.destroy(), timeoutMs);
  const cleanup = () => {
    clearTimeout(timer);
    socket.off("data", onData);
    socket.off("error", onError);
    socket.off("close", onClose);
  };
  const onError = () => cleanup();
  const onClose = () => cleanup();
  const onData = (chunk: Buffer) => {
    seen = seen.length === 0 ? chunk : Buffer.concat([seen, chunk]);
    const n = Math.min(seen.length, PREFACE.length);
    const isHttp2 = seen.subarray(0, n).equals(PREFACE.subarray(0, n));
    if (isHttp2 && n < PREFACE.length) return; // a prefix of the preface: wait for more
    cleanup();
    socket.pause();
    socket.unshift(seen);
    decide(isHttp2);
  };
  socket.on("data", onData);
  socket.once("error", onError);
  socket.once("close", onClose);
}
