import { setMaxListeners } from "node:events";
import { readFile } from "node:fs/promises";
import { setTimeout } from "node:timers/promises";
import type { DescMethod } from "@bufbuild/protobuf";
import type { Interceptor, Transport } from "@connectrpc/connect";
import type { Logger } from "pino";
import { Health } from "../../../gen/grpc/health/v1/health_pb.js";
import { OPEN_SERVICES } from "../interceptors/access.js";
import { createHostIdentity } from "../interceptors/identity.js";
import { createPeerClients, selfUrlOf, type PeerClients } from "../clients.js";
import { SERVICE_NAMES, type ServiceName } from "../../registry.js";
import { ConfigError, type Config } from "../config.js";
import { shuttingDownError } from "../errors.js";
import { createInMemoryTransport } from "./in-memory-transport.js";
import { createHealthService, type HealthService } from "./health.js";
import { listen, type HttpListener } from "./http-listener.js";
import { createCallLimitInterceptor } from "../interceptors/call-limits.js";
import { createLogger } from "../logger.js";
import { createLoggingInterceptor } from "../interceptors/logging.js";
import { createReadRetryInterceptor } from "../interceptors/read-retry.js";
import { createReflection } from "./reflection.js";
import { createRequestHandler, createRouteRecorder } from "./adapter.js";
import { openResources, type Resources } from "./resources.js";
import type { ServiceContext, ServiceInstance, ServiceModule } from "./service-module.js";
import { createTracingInterceptor } from "../telemetry/interceptors.js";
import { createValidationInterceptor, recordImplemented, warmValidation } from "../interceptors/validation.js";
import { createServerMetricsInterceptor } from "../telemetry/metrics-interceptor.js";
import { flushMetrics, startMetrics } from "../telemetry/metrics-sdk.js";
import { startMetricsServer, type MetricsServer } from "../telemetry/metrics-server.js";

/**
 * The one place where services start: configuration → shared resources → router with the
 * standard interceptors → one port serving gRPC, gRPC-Web and Connect (HTTP/2 and HTTP/1.1),
 * with health and reflection — and the way back down on shutdown.
 */

/** Options for `startHost`. */
export interface HostOptions {
  /** The service modules to run (see services/registry.ts). */
  readonly services: readonly ServiceModule[];
  readonly config: Config;
  /** Default: a JSON logger at the configured level. */
  readonly logger?: Logger;
  /** Shared resources created elsewhere (tests); missing ones are opened as needed. */
  readonly resources?: Partial<Resources>;
  /** Run database migrations when the database is opened here (default true). */
  readonly migrate?: boolean;
  /** Extra server interceptors, applied inside the access check (tests, later features). */
  readonly interceptors?: readonly Interceptor[];
  /** The development root token to accept as an admin (`keymesh serve --dev`; see root-token.ts). */
  readonly rootToken?: string;
}

/** A running host. */
export interface Host {
  /** Base URL clients use, e.g. http://127.0.0.1:8080. */
  readonly url: string;
  readonly port: number;
  /** The Prometheus scrape URL when KEYMESH_METRICS_PORT is set, e.g. http://127.0.0.1:9464/metrics. */
  readonly metricsUrl: string | undefined;
  /** Full names of the services served (the seven's subset plus health and reflection). */
  readonly services: readonly string[];
  readonly health: HealthService;
  readonly clients: PeerClients;
  /** Aborted when shutdown begins (the `shutdown` signal services receive). */
  readonly shutdownSignal: AbortSignal;
  /** Calls being served right now. */
  inFlight(): number;
  /**
   * Shuts down gracefully within `KEYMESH_SHUTDOWN_TIMEOUT_MS`: health NOT_SERVING, stop
   * accepting, drain calls (aborting those still running after half the budget), close
   * services, then the database and the coordinator. Safe to call more than once.
   */
  close(): Promise<void>;
}

/** Share of the shutdown budget calls get to finish before their signal is aborted. */
const GRACE_SHARE = 0.5;
/** Share of the budget after which remaining connections are destroyed. */
const FORCE_SHARE = 0.8;

/** Waits up to `ms` (never negative) without keeping the process alive. */
const sleep = (ms: number) => setTimeout(Math.max(0, ms), undefined, { ref: false });

async function readTls(config: Config): Promise<{ cert: Buffer; key: Buffer } | undefined> {
  if (config.tls === undefined) return undefined;
  const read = async (file: string, variable: string, what: string) => {
    try {
      return await readFile(file);
    } catch {
      throw new ConfigError(variable, `a readable ${what} file (PEM), cannot read ${file}`);
    }
  };
  return {
    cert: await read(config.tls.certFile, "KEYMESH_TLS_CERT", "certificate"),
    key: await read(config.tls.keyFile, "KEYMESH_TLS_KEY", "private key"),
  };
}

/** Starts the services of `opts.services` on one port; resolves once it is listening. */
export async function startHost(opts: HostOptions): Promise<Host> {
  const { config } = opts;
  const logger = opts.logger ?? createLogger({ level: config.logLevel });
  for (const name of config.unknownVariables) logger.warn({ variable: name }, "unknown KEYMESH_* variable ignored");
  const names = opts.services.map((m) => m.name);
  if (new Set(names).size !== names.length) throw new Error(`a service is listed twice: ${names.join(", ")}`);

  const tls = await readTls(config);
  await startMetrics({ prometheus: config.metricsPort !== undefined, serviceName: names.length === 1 ? `keymesh-${names[0]}` : "keymesh" });
  const draining = new AbortController();
  const shutdown = new AbortController();
  // Every call in flight listens on these (the adapter links each call's signal to `shutdown`,
  // the handlers watch `draining`): shared by design, as many listeners as calls, not a leak.
  setMaxListeners(0, shutdown.signal, draining.signal);
  let url = selfUrlOf(config, config.port);
  const identity = createHostIdentity({ config, clients: () => clients, ...(opts.rootToken === undefined ? {} : { rootToken: opts.rootToken }) });
  // Peers served by this process are called in memory, through the same routes and server
  // interceptors as a call from outside (set once the modules have registered).
  let inMemory: ((clientInterceptors: Interceptor[]) => Transport) | undefined;
  const clients = createPeerClients(config, {
    selfUrl: () => url,
    serviceToken: identity.serviceToken,
    caller: names.join(","),
    local: {
      services: names.filter((n): n is ServiceName => (SERVICE_NAMES as readonly string[]).includes(n)),
      transport: (clientInterceptors) => {
        if (!inMemory) throw new Error("a peer was called before the host finished starting");
        return inMemory(clientInterceptors);
      },
    },
  });
  const resources = await openResources({ config, logger, modules: opts.services, given: opts.resources ?? {}, migrate: opts.migrate ?? true });
  const instances: ServiceInstance[] = [];

  const closeResources = async () => {
    clients.close();
    for (const instance of instances.reverse()) {
      try {
        await instance.close?.();
      } catch (err) {
        logger.error({ err: String(err) }, "a service failed to close");
      }
    }
    await resources.close();
  };

  let listener: HttpListener;
  let health: HealthService;
  let served: string[];
  let handler: ReturnType<typeof createRequestHandler>;
  const implemented = new Set<DescMethod>(); // request rules apply to RPCs that are built
  try {
    const interceptors: Interceptor[] = [
      // Tracing outermost, so the one log line per call is written inside the call's span
      // and carries its trace_id and span_id.
      createTracingInterceptor({ filter: (req) => !OPEN_SERVICES.includes(req.service.typeName) }),
      createLoggingInterceptor({ logger, quiet: (req) => OPEN_SERVICES.includes(req.service.typeName) }),
      createServerMetricsInterceptor({ filter: (req) => !OPEN_SERVICES.includes(req.service.typeName) }),
      identity.interceptor,
      ...(opts.interceptors ?? []),
      // A read that met a database connection dropped under it is rerun on a fresh one.
      createReadRetryInterceptor(),
      createCallLimitInterceptor(),
      createValidationInterceptor({ validates: (method) => implemented.has(method) }),
    ];
    const recorder = createRouteRecorder();
    const router = recordImplemented(recorder.router, implemented);
    const routes = recorder.routes;
    for (const module of opts.services) {
      const ctx: ServiceContext = {
        config,
        logger: logger.child({ service: module.name }),
        db: resources.databaseFor(module),
        coordinator: resources.coordinatorFor(module),
        clients,
        shutdown: draining.signal,
      };
      const instance = await module.register(router, ctx);
      if (instance) instances.push(instance);
      if (instance?.authenticate !== undefined) identity.useLocalSessions(instance.authenticate.bind(instance));
      if (!router.handlers.some((h) => h.service.typeName === module.desc.typeName)) {
        throw new Error(`service module "${module.name}" did not register ${module.desc.typeName}`);
      }
    }
    health = createHealthService({ services: opts.services.map((m) => m.desc.typeName) });
    health.register(router);
    const reflection = createReflection([...opts.services.map((m) => m.desc), Health]);
    reflection.register(router);
    served = [...reflection.serviceNames];
    // Oversize messages fail with ResourceExhausted; what the server sends is not limited.
    handler = createRequestHandler({ readMaxBytes: config.maxRequestBytes, writeMaxBytes: 0xffffffff, interceptors, shutdownSignal: shutdown.signal, routes, logger });
    inMemory = (clientInterceptors) =>
      createInMemoryTransport(routes, { router: { readMaxBytes: config.maxRequestBytes, interceptors, shutdownSignal: shutdown.signal }, clientInterceptors });
    listener = await listen({ host: config.host, port: config.port, tls, handler });
  } catch (err) {
    await closeResources().catch(() => undefined);
    throw err;
  }
  let metricsServer: MetricsServer | undefined;
  if (config.metricsPort !== undefined) {
    try {
      metricsServer = await startMetricsServer({ host: config.host, port: config.metricsPort });
    } catch (err) {
      await listener.destroy().catch(() => undefined);
      await closeResources().catch(() => undefined);
      throw err;
    }
    logger.info({ url: metricsServer.url }, "serving metrics");
  }
  url = selfUrlOf(config, listener.port);
  // The request rules of every method, compiled in the background now rather than on each
  // method's first call.
  void warmValidation([...implemented].map((m) => m.input), shutdown.signal).catch((err: unknown) => logger.warn({ err: String(err) }, "could not compile the request rules ahead"));
  logger.info(
    { services: opts.services.map((m) => m.name), address: `${listener.address}:${listener.port}`, url, tls: tls !== undefined },
    "keymesh serving",
  );

  let closing: Promise<void> | undefined;
  const close = () => {
    closing ??= (async () => {
      const started = Date.now();
      const budget = config.shutdownTimeoutMs;
      logger.info({ inFlight: handler.inFlight(), timeoutMs: budget }, "shutting down");
      health.shutdown();
      draining.abort(shuttingDownError());
      handler.drain();
      listener.stopAccepting();
      await Promise.race([handler.idle(), sleep(budget * GRACE_SHARE)]);
      if (handler.inFlight() > 0) {
        logger.warn({ inFlight: handler.inFlight() }, "aborting calls still running after the grace period");
        shutdown.abort(shuttingDownError());
        await Promise.race([handler.idle(), sleep(started + budget * FORCE_SHARE - Date.now())]);
      }
      if (handler.inFlight() > 0) logger.warn({ inFlight: handler.inFlight() }, "closing connections with calls still open");
      await Promise.race([listener.destroy(), sleep(started + budget - Date.now())]);
      await closeResources();
      await metricsServer?.close();
      await flushMetrics();
      logger.info({ durationMs: Date.now() - started }, "stopped");
    })();
    return closing;
  };

  return {
    url,
    port: listener.port,
    metricsUrl: metricsServer?.url,
    services: served,
    health,
    clients,
    shutdownSignal: draining.signal,
    inFlight: () => handler.inFlight(),
    close,
  };
}
