/**
 * Process-wide OpenTelemetry setup, driven by the standard OTEL_* variables.
 *
 * Importing this module does nothing; `preload.ts` calls `startTelemetry()`
 * before the application is imported, `keymesh serve` calls `reportTelemetry()`
 * with its logger, and the service host calls `flushTelemetry()` /
 * `shutdownTelemetry()` while draining.
 *
 * Nothing is started unless a traces endpoint is configured
 * (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT) or
 * OTEL_TRACES_EXPORTER asks for `console`. Without it the process keeps the
 * no-op API: no span processor, no loader hook, no patched modules.
 */
import { register } from "node:module";
import { trace } from "@opentelemetry/api";
import type { NodeSDK } from "@opentelemetry/sdk-node";
import type { SpanProcessor } from "@opentelemetry/sdk-trace-base";
import pino from "pino";
import { createLogger, type Logger } from "../logger.js";
import { createInstrumentations, instrumentedModules } from "./instrumentations.js";
import { createServiceTracerProvider } from "./service-tracer-provider.js";
import { createSqlSpanProcessor } from "./sql-spans.js";
import { createTraceExporter, traceEndpoint, warnOnExportFailure } from "./trace-exporter.js";

/** Options for `startTelemetry`; every field has an OTEL_* equivalent that wins. */
export interface StartTelemetryOptions {
  /** service.name of spans outside any service (default "keymesh"), unless OTEL_SERVICE_NAME is set. */
  serviceName?: string;
}

/** What `startTelemetry` decided, for logs and tests. */
export interface TelemetryState {
  /** True once the SDK is running and spans are exported. */
  readonly enabled: boolean;
  /** The exporter in use: "http/protobuf", "http/json", "grpc", "console" or "none". */
  readonly exporter: string;
  /** Where OTLP spans are sent (absent for the console and when off). */
  readonly endpoint?: string;
  /**
   * The service.name the operator set for every span (OTEL_SERVICE_NAME or
   * OTEL_RESOURCE_ATTRIBUTES); absent when each service reports its own.
   */
  readonly serviceName?: string;
  /** Why telemetry is off, or why the exporter differs from the one asked for. */
  readonly reason?: string;
}

/** What telemetry logs through. */
export type TelemetryLogger = Pick<Logger, "info" | "warn">;

/**
 * Default BatchSpanProcessor delay; OTEL_BSP_SCHEDULE_DELAY overrides it. A batch's trace is in
 * Jaeger about a second after it ends, and a busy process exports a few hundred spans per
 * request rather than dozens (each export costs a request and an encoding pass; at 250 ms the
 * signing bench spent a measurable share of its tracing overhead on them).
 */
const DEFAULT_SCHEDULE_DELAY_MS = 1000;
/**
 * Longest a flush or the shutdown waits for the collector. The exporters' own timeout
 * (OTEL_EXPORTER_OTLP_TIMEOUT, 10 s) would hold every exit that long when it is down.
 */
export const FLUSH_LIMIT_MS = 2_000;
/** service.name of spans outside any service when the operator set none. */
const DEFAULT_SERVICE_NAME = "keymesh";

let state: TelemetryState = { enabled: false, exporter: "none", reason: "not started" };
let starting: Promise<TelemetryState> | undefined;
let sdk: NodeSDK | undefined;
let processor: { forceFlush(): Promise<void>; shutdown(): Promise<void> } | undefined;
let shutdownPromise: Promise<void> | undefined;
let ownLogger: TelemetryLogger | undefined;
/** Set once a failed export has been reported, so the shutdown does not report it again. */
let endpointWarned = false;

/** The current telemetry state. */
export function telemetryState(): TelemetryState {
  return state;
}

/**
 * Decides from the environment whether and how to export traces.
 * Pure: reads variables, starts nothing.
 */
export function resolveTraceExport(env: NodeJS.ProcessEnv = process.env): TelemetryState {
  const read = (name: string) => readEnv(env, name);
  if (read("OTEL_SDK_DISABLED")?.toLowerCase() === "true") {
    return { enabled: false, exporter: "none", reason: "OTEL_SDK_DISABLED" };
  }
  const exporters = read("OTEL_TRACES_EXPORTER")?.split(",").map((s) => s.trim()) ?? ["otlp"];
  if (exporters.includes("none")) {
    return { enabled: false, exporter: "none", reason: "OTEL_TRACES_EXPORTER=none" };
  }
  const serviceName = fixedServiceName(env);
  const where = (exporter: string): TelemetryState => ({
    enabled: true,
    exporter,
    ...(exporter === "console" ? {} : { endpoint: traceEndpoint(exporter, env) }),
    ...(serviceName === undefined ? {} : { serviceName }),
  });
  if (exporters.includes("console")) {
    return where("console");
  }
  if (!read("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") && !read("OTEL_EXPORTER_OTLP_ENDPOINT")) {
    return { enabled: false, exporter: "none", reason: "no OTLP endpoint configured" };
  }
  const protocol = read("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") ?? read("OTEL_EXPORTER_OTLP_PROTOCOL") ?? "http/protobuf";
  if (protocol !== "http/protobuf" && protocol !== "http/json" && protocol !== "grpc") {
    // As the NodeSDK does: fall back rather than lose the traces.
    return { ...where("http/protobuf"), reason: `unsupported OTLP protocol "${protocol}"` };
  }
  return where(protocol);
}

/** The operator's service.name for the whole process, if any (the env detector's sources). */
function fixedServiceName(env: NodeJS.ProcessEnv): string | undefined {
  const name = readEnv(env, "OTEL_SERVICE_NAME");
  if (name !== undefined) return name;
  for (const pair of readEnv(env, "OTEL_RESOURCE_ATTRIBUTES")?.split(",") ?? []) {
    const [key, value] = pair.split("=").map((s) => s.trim());
    if (key === "service.name" && value) return decodeURIComponent(value);
  }
  return undefined;
}

/**
 * Starts tracing when the environment asks for it: W3C trace context and baggage
 * propagation, the knex and ioredis instrumentations, SQL spans named by the database
 * conventions, a per-service `service.name`, and a BatchSpanProcessor feeding the exporter
 * chosen by OTEL_EXPORTER_OTLP_PROTOCOL. Call it once, before the application's modules are
 * imported. Idempotent.
 */
export function startTelemetry(opts: StartTelemetryOptions = {}): Promise<TelemetryState> {
  starting ??= start(opts);
  return starting;
}

async function start(opts: StartTelemetryOptions): Promise<TelemetryState> {
  const decided = resolveTraceExport(process.env);
  if (!decided.enabled) {
    state = decided;
    return state;
  }

  let exporter = await createTraceExporter(decided.exporter);
  if (decided.endpoint !== undefined) {
    exporter = warnOnExportFailure(exporter, { endpoint: decided.endpoint, protocol: decided.exporter }, (fields, message) => {
      endpointWarned = true;
      telemetryLogger().warn(fields, message);
    });
  }
  const { BatchSpanProcessor } = await import("@opentelemetry/sdk-trace-base");
  const batch = new BatchSpanProcessor(exporter, {
    // The other OTEL_BSP_* variables are read by the processor itself.
    scheduledDelayMillis: readNumber("OTEL_BSP_SCHEDULE_DELAY") ?? DEFAULT_SCHEDULE_DELAY_MS,
  });
  // service.name: the operator's choice (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES) names
  // every span of the process; otherwise each service's spans carry its own name and the rest
  // (start-up, the CLI) carry `opts.serviceName` or "keymesh".
  sdk = await installTracing(batch, { serviceName: opts.serviceName, operatorNamed: decided.serviceName !== undefined });
  processor = batch;
  state = decided;
  return state;
}

/** Options of `installTracing`. */
export interface InstallTracingOptions {
  /** service.name of spans outside any service (default "keymesh"). */
  readonly serviceName?: string;
  /** The operator named the service (OTEL_SERVICE_NAME...): every span keeps that name. */
  readonly operatorNamed?: boolean;
}

/**
 * Installs tracing into this process with `exportProcessor` as the last stage: the loader
 * hook, the knex and ioredis instrumentations, the context manager and W3C propagators, and
 * the per-service tracer provider, whose SQL spans are renamed (`sql-spans.ts`) before
 * `exportProcessor` sees them. `startTelemetry`
 * calls it with the OTLP batch processor; tests call it with an in-memory exporter, so what
 * they assert is what production exports. Call it before knex and ioredis are imported.
 */
export async function installTracing(exportProcessor: SpanProcessor, opts: InstallTracingOptions = {}): Promise<NodeSDK> {
  // ESM applications import knex and ioredis with `import`, which Node routes past
  // Module.prototype.require, so require-in-the-middle never sees the packages' entry points
  // (ioredis is patched only there). The import-in-the-middle loader hook wraps those entry
  // points instead; the instrumentations register their ESM hooks with it when they are
  // enabled. Files the packages load internally (knex/lib/execution/runner.js) still go
  // through `require` and are patched by require-in-the-middle. The `include` list keeps every
  // other module, including tsx-compiled sources, out of the wrapper.
  register("@opentelemetry/instrumentation/hook.mjs", import.meta.url, {
    data: { include: [...instrumentedModules] },
  });

  const [{ NodeSDK }, core, resources] = await Promise.all([
    import("@opentelemetry/sdk-node"),
    import("@opentelemetry/core"),
    import("@opentelemetry/resources"),
  ]);
  const detected = resources.detectResources({ detectors: [resources.envDetector, resources.processDetector, resources.hostDetector] });
  const resource = resources
    .defaultResource()
    .merge(opts.operatorNamed ? null : resources.resourceFromAttributes({ "service.name": opts.serviceName ?? DEFAULT_SERVICE_NAME }))
    .merge(detected);
  trace.setGlobalTracerProvider(
    createServiceTracerProvider({ resource, spanProcessors: [createSqlSpanProcessor(), exportProcessor], fixedServiceName: opts.operatorNamed ?? false }),
  );

  // The NodeSDK installs the context manager, the propagators and the instrumentations. It
  // gets no span processor, so it registers no tracer provider of its own.
  const nodeSdk = new NodeSDK({
    resource,
    autoDetectResources: false,
    spanProcessors: [],
    // Traces only: no metric readers and no log processors.
    metricReaders: [],
    logRecordProcessors: [],
    // W3C trace context + baggage, unless OTEL_PROPAGATORS asks for something else.
    ...(readEnv(process.env, "OTEL_PROPAGATORS")
      ? {}
      : {
          textMapPropagator: new core.CompositePropagator({
            propagators: [new core.W3CTraceContextPropagator(), new core.W3CBaggagePropagator()],
          }),
        }),
    instrumentations: await createInstrumentations(),
  });
  nodeSdk.start();
  return nodeSdk;
}

/**
 * Sends telemetry's own messages (a collector that cannot be reached) to `logger` from now
 * on, and logs where traces go: the OTLP endpoint and protocol, or why tracing is off.
 * `keymesh serve` calls it once its logger exists.
 */
export function reportTelemetry(logger: TelemetryLogger): void {
  ownLogger = logger;
  const current = telemetryState();
  if (current.enabled) {
    logger.info(
      {
        exporter: current.exporter,
        ...(current.endpoint === undefined ? {} : { endpoint: current.endpoint }),
        serviceName: current.serviceName ?? "keymesh-<service> per service",
        ...(current.reason === undefined ? {} : { note: current.reason }),
      },
      current.endpoint === undefined ? `tracing to the ${current.exporter}` : `tracing to ${current.endpoint} (OTLP ${current.exporter})`,
    );
  } else {
    logger.info(
      { reason: current.reason },
      "tracing off: set OTEL_EXPORTER_OTLP_ENDPOINT (e.g. http://localhost:4318) to export traces",
    );
  }
}

/**
 * Exports every finished span now, waiting at most `FLUSH_LIMIT_MS`. Resolves when done;
 * never rejects.
 */
export async function flushTelemetry(): Promise<void> {
  if (processor === undefined) return;
  await bounded(processor.forceFlush(), "flush");
}

/**
 * Flushes and stops the SDK, waiting at most `FLUSH_LIMIT_MS` for the collector; later spans
 * are dropped. Safe to call more than once and when telemetry never started. Never rejects.
 */
export function shutdownTelemetry(): Promise<void> {
  if (sdk === undefined || processor === undefined) return Promise.resolve();
  const [nodeSdk, batch] = [sdk, processor];
  shutdownPromise ??= bounded(Promise.all([batch.shutdown(), nodeSdk.shutdown()]), "shutdown");
  return shutdownPromise;
}

/**
 * Waits for `work` up to FLUSH_LIMIT_MS. A collector too slow to answer is reported, unless a
 * failed export already was: one line per process about an endpoint that is down.
 */
async function bounded(work: Promise<unknown>, what: string): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<"timeout">((resolve) => {
    timer = setTimeout(() => resolve("timeout"), FLUSH_LIMIT_MS);
    timer.unref();
  });
  const outcome = await Promise.race([work.then(() => "done" as const, () => "done" as const), limit]);
  clearTimeout(timer);
  if (outcome === "timeout" && !endpointWarned) {
    endpointWarned = true;
    telemetryLogger().warn(
      { endpoint: state.endpoint, limitMs: FLUSH_LIMIT_MS },
      `traces not exported: the ${what} did not finish within ${FLUSH_LIMIT_MS} ms; remaining spans are dropped`,
    );
  }
}

/** The logger given to `reportTelemetry`, or one on standard error (stdout may carry JSON). */
function telemetryLogger(): TelemetryLogger {
  ownLogger ??= createLogger({ destination: pino.destination({ dest: 2, sync: true }), base: { component: "telemetry" } });
  return ownLogger;
}

function readEnv(env: NodeJS.ProcessEnv, name: string): string | undefined {
  const value = env[name]?.trim();
  return value ? value : undefined;
}

function readNumber(name: string): number | undefined {
  const value = Number(readEnv(process.env, name));
  return Number.isFinite(value) && value >= 0 ? value : undefined;
}
