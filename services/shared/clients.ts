import { readFileSync } from "node:fs";
import { rootCertificates } from "node:tls";
import type { DescService } from "@bufbuild/protobuf";
import { createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { createGrpcTransport, type Http2SessionManager } from "@connectrpc/connect-node";
import { MESH_HTTP2_SETTINGS, MeshHttp2SessionManager } from "./http2-flow.js";
import { SERVICES, SERVICE_NAMES, type ServiceDescriptors, type ServiceName } from "../registry.js";
import type { Config } from "./config.js";
import { createClientTracingInterceptor, type ClientTracingInterceptorOptions } from "./telemetry/interceptors.js";
import { createClientMetricsInterceptor } from "./telemetry/metrics-interceptor.js";

/**
 * Generated clients for every registered service, created on first use, over gRPC (HTTP/2) at
 * `KEYMESH_<NAME>_URL` or this process's own address. Services call each other only
 * through these, never by importing each other's code.
 */
export type PeerClients = { readonly [N in ServiceName]: Client<ServiceDescriptors[N]> } & {
  /** The URL a service's client talks to. */
  urlOf(name: ServiceName): string;
  /** Closes every connection the clients opened. */
  close(): void;
};

/** Options for `createPeerClients`. */
export interface PeerClientsOptions {
  /**
   * The URL of this process, used for services without an explicit URL. A function is read
   * on first use (the port is known only after listening). Default: derived from the config.
   */
  readonly selfUrl?: string | (() => string);
  /** Interceptors applied after tracing and the service credential. */
  readonly interceptors?: readonly Interceptor[];
  /** Sent as `x-keymesh-caller` on service-to-service calls. */
  readonly caller?: string;
  /** The service token to send (default `KEYMESH_SERVICE_TOKEN`). */
  readonly serviceToken?: string;
  /** One transport for every peer instead of gRPC at their URLs (an in-process router in tests). */
  readonly transport?: Transport;
  /**
   * Services this process serves itself. A peer among them whose URL is not configured is
   * called in memory through `transport` (given the clients' interceptors, made on first use),
   * not over HTTP/2 to this process's own port: same handlers, same server interceptors, no
   * sockets or HTTP/2 framing.
   */
  readonly local?: { readonly services: readonly ServiceName[]; transport(interceptors: Interceptor[]): Transport };
}

/**
 * How calls between mesh services are traced: the callee's server span records a successful
 * unary call, a failed one gets a client span too (see `ClientTracingInterceptorOptions`).
 */
export const peerClientTracing: ClientTracingInterceptorOptions = { clientSpans: "failures" };

/** The URL at which this process is reachable from itself for a configuration and port. */
export function selfUrlOf(config: Pick<Config, "host" | "tls">, port: number): string {
  const scheme = config.tls === undefined ? "http" : "https";
  let host = config.host;
  if (config.tls !== undefined) host = "localhost";
  else if (host === "0.0.0.0" || host === "") host = "127.0.0.1";
  else if (host === "::" || host === "[::]") host = "[::1]";
  else if (host.includes(":") && !host.startsWith("[")) host = `[${host}]`;
  return `${scheme}://${host}:${port}`;
}

/** An interceptor that sends the service token on every call that carries no credentials. */
export function createServiceCredentialInterceptor(token: string, caller?: string): Interceptor {
  return (next) => (req) => {
    if (!req.header.has("authorization")) req.header.set("authorization", `Bearer ${token}`);
    if (caller !== undefined && !req.header.has("x-keymesh-caller")) req.header.set("x-keymesh-caller", caller);
    return next(req);
  };
}

/** Creates the peer clients for a configuration; nothing connects until a client is used. */
export function createPeerClients(config: Config, opts: PeerClientsOptions = {}): PeerClients {
  const selfUrl = () => {
    if (typeof opts.selfUrl === "function") return opts.selfUrl();
    return opts.selfUrl ?? selfUrlOf(config, config.port);
  };
  const interceptors: Interceptor[] = [createClientTracingInterceptor(peerClientTracing), createClientMetricsInterceptor()];
  const serviceToken = opts.serviceToken ?? config.serviceToken;
  if (serviceToken !== undefined) interceptors.push(createServiceCredentialInterceptor(serviceToken, opts.caller));
  interceptors.push(...(opts.interceptors ?? []));

  let trusted: string[] | undefined;
  const trustFor = (url: string) => {
    // Peers' certificates are checked against KEYMESH_TLS_CA (the mesh's own CA), and our own
    // certificate is trusted for calls to ourselves (it may be self-signed).
    if (!url.startsWith("https:") || (config.tls === undefined && config.tlsCaFile === undefined)) return {};
    trusted ??= [
      ...rootCertificates,
      ...(config.tlsCaFile === undefined ? [] : [readFileSync(config.tlsCaFile, "utf8")]),
      ...(config.tls === undefined ? [] : [readFileSync(config.tls.certFile, "utf8")]),
    ];
    return { ca: trusted };
  };

  const managers = new Map<string, Http2SessionManager>();
  const transports = new Map<string, Transport>();
  const transportFor = (url: string): Transport => {
    let transport = transports.get(url);
    if (transport === undefined) {
      const manager = new MeshHttp2SessionManager(url, { idleConnectionTimeoutMs: 60_000 }, { ...trustFor(url), settings: MESH_HTTP2_SETTINGS });
      managers.set(url, manager);
      // No compression inside the mesh: batches of random payloads and signatures do not
      // compress, and gzip would cost more CPU than the signing itself saves on the wire.
      transport = createGrpcTransport({ baseUrl: url, sessionManager: manager, interceptors, acceptCompression: [] });
      transports.set(url, transport);
    }
    return transport;
  };

  const urlOf = (name: ServiceName) => config.serviceUrls[name] ?? selfUrl();
  let inMemory: Transport | undefined;
  const local = opts.local;
  const servedHere = (name: ServiceName) => local !== undefined && local.services.includes(name) && config.serviceUrls[name] === undefined;
  const remote = (name: ServiceName): Transport => ({
    unary: (...args) => transportFor(urlOf(name)).unary(...args),
    stream: (...args) => transportFor(urlOf(name)).stream(...args),
  });
  const here = (): Transport => ({
    unary: (...args) => (inMemory ??= local!.transport(interceptors)).unary(...args),
    stream: (...args) => (inMemory ??= local!.transport(interceptors)).stream(...args),
  });
  const clients = new Map<ServiceName, unknown>();
  const clientFor = (name: ServiceName) => {
    let client = clients.get(name);
    if (client === undefined) {
      // The URL (or the in-memory router) is resolved per call, not when the client is made: a
      // service may take its clients at registration, before a port-0 listener knows its own
      // address and before the router holds every service.
      const lazy: Transport = opts.transport ?? (servedHere(name) ? here() : remote(name));
      client = createClient(SERVICES[name].desc as DescService, lazy);
      clients.set(name, client);
    }
    return client;
  };

  const peers = {
    urlOf,
    close() {
      for (const m of managers.values()) m.abort();
      managers.clear();
      transports.clear();
      clients.clear();
      inMemory = undefined;
    },
  };
  for (const name of SERVICE_NAMES) {
    Object.defineProperty(peers, name, { enumerable: true, get: () => clientFor(name) });
  }
  return peers as PeerClients;
}
