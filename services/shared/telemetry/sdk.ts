/**
 * Process-wide OpenTelemetry setup, driven by the standard OTEL_* variables.
 *
 * Importing this module does nothing; `preload.ts` calls `startTelemetry()`
 * before the application is imported, and the service host calls
 * `flushTelemetry()` / `shutdownTelemetry()` while draining.
 *
 * Nothing is started unless a traces endpoint is configured
 * (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT) or
 * OTEL_TRACES_EXPORTER asks for `console`. Without it the process keeps the
 * no-op API: no span processor, no loader hook, no patched modules.
 */
import { register } from "node:module";
import type { NodeSDK } from "@opentelemetry/sdk-node";
import type { SpanExporter } from "@opentelemetry/sdk-trace-base";
import { createInstrumentations, instrumentedModules } from "./instrumentations.js";

/** Options for `startTelemetry`; every field has an OTEL_* equivalent that wins. */
export interface StartTelemetryOptions {
  /** Used as service.name when OTEL_SERVICE_NAME is not set. */
  serviceName?: string;
}

/** What `startTelemetry` decided, for logs and tests. */
export interface TelemetryState {
  /** True once the SDK is running and spans are exported. */
  readonly enabled: boolean;
  /** The exporter in use: "http/protobuf", "http/json", "grpc", "console" or "none". */
  readonly exporter: string;
  /** Why telemetry is off, or why the exporter differs from the one asked for. */
  readonly reason?: string;
}

/** Default BatchSpanProcessor delay; OTEL_BSP_SCHEDULE_DELAY overrides it. */
const DEFAULT_SCHEDULE_DELAY_MS = 250;

let state: TelemetryState = { enabled: false, exporter: "none", reason: "not started" };
let starting: Promise<TelemetryState> | undefined;
let sdk: NodeSDK | undefined;
let processor: { forceFlush(): Promise<void> } | undefined;
let shutdownPromise: Promise<void> | undefined;

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
  if (exporters.includes("console")) {
    return { enabled: true, exporter: "console" };
  }
  if (!read("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") && !read("OTEL_EXPORTER_OTLP_ENDPOINT")) {
    return { enabled: false, exporter: "none", reason: "no OTLP endpoint configured" };
  }
  const protocol = read("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") ?? read("OTEL_EXPORTER_OTLP_PROTOCOL") ?? "http/protobuf";
  if (protocol !== "http/protobuf" && protocol !== "http/json" && protocol !== "grpc") {
    // As the NodeSDK does: fall back rather than lose the traces.
    return { enabled: true, exporter: "http/protobuf", reason: `unsupported OTLP protocol "${protocol}"` };
  }
  return { enabled: true, exporter: protocol };
}

/**
 * Starts the NodeSDK when the environment asks for it: W3C trace context and
 * baggage propagation, the knex / mysql2 / ioredis instrumentations, and a
 * BatchSpanProcessor feeding the exporter chosen by OTEL_EXPORTER_OTLP_PROTOCOL.
 * Call it once, before the application's modules are imported. Idempotent.
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

  // ESM applications import knex, mysql2 and ioredis with `import`, which
  // Node routes past Module.prototype.require, so require-in-the-middle never
  // sees the packages' entry points (ioredis is patched only there). The
  // import-in-the-middle loader hook wraps those entry points instead; the
  // instrumentations register their ESM hooks with it when they are enabled.
  // Files the packages load internally (knex/lib/execution/runner.js,
  // mysql2/lib/connection.js) still go through `require` and are patched by
  // require-in-the-middle. The `include` list keeps every other module,
  // including tsx-compiled sources, out of the wrapper.
  register("@opentelemetry/instrumentation/hook.mjs", import.meta.url, {
    data: { include: [...instrumentedModules] },
  });

  const [{ NodeSDK }, { BatchSpanProcessor }, { CompositePropagator, W3CBaggagePropagator, W3CTraceContextPropagator }] =
    await Promise.all([import("@opentelemetry/sdk-node"), import("@opentelemetry/sdk-trace-base"), import("@opentelemetry/core")]);

  const exporter = await createExporter(decided.exporter);
  const batch = new BatchSpanProcessor(exporter, {
    // The other OTEL_BSP_* variables are read by the processor itself.
    scheduledDelayMillis: readNumber("OTEL_BSP_SCHEDULE_DELAY") ?? DEFAULT_SCHEDULE_DELAY_MS,
  });
  const serviceName = readEnv(process.env, "OTEL_SERVICE_NAME") ? undefined : opts.serviceName;
  sdk = new NodeSDK({
    ...(serviceName === undefined ? {} : { serviceName }),
    spanProcessors: [batch],
    // Traces only: no metric readers and no log processors.
    metricReaders: [],
    logRecordProcessors: [],
    // W3C trace context + baggage, unless OTEL_PROPAGATORS asks for something else.
    ...(readEnv(process.env, "OTEL_PROPAGATORS")
      ? {}
      : {
          textMapPropagator: new CompositePropagator({
            propagators: [new W3CTraceContextPropagator(), new W3CBaggagePropagator()],
          }),
        }),
    instrumentations: await createInstrumentations(),
  });
  sdk.start();
  processor = batch;
  state = decided;
  return state;
}

/** Exports every finished span now. Resolves when done; never rejects. */
export async function flushTelemetry(): Promise<void> {
  if (processor === undefined) return;
  await processor.forceFlush().catch(() => undefined);
}

/**
 * Flushes and stops the SDK; later spans are dropped. Safe to call more than
 * once and when telemetry never started. Never rejects.
 */
export function shutdownTelemetry(): Promise<void> {
  if (sdk === undefined) return Promise.resolve();
  shutdownPromise ??= sdk.shutdown().catch(() => undefined);
  return shutdownPromise;
}

async function createExporter(kind: string): Promise<SpanExporter> {
  switch (kind) {
    case "console": {
      const { ConsoleSpanExporter } = await import("@opentelemetry/sdk-trace-base");
      return new ConsoleSpanExporter();
    }
    case "grpc": {
      const { OTLPTraceExporter } = await import("@opentelemetry/exporter-trace-otlp-grpc");
      return new OTLPTraceExporter();
    }
    case "http/json": {
      const { OTLPTraceExporter } = await import("@opentelemetry/exporter-trace-otlp-http");
      return new OTLPTraceExporter();
    }
    default: {
      const { OTLPTraceExporter } = await import("@opentelemetry/exporter-trace-otlp-proto");
      return new OTLPTraceExporter();
    }
  }
}

function readEnv(env: NodeJS.ProcessEnv, name: string): string | undefined {
  const value = env[name]?.trim();
  return value ? value : undefined;
}

function readNumber(name: string): number | undefined {
  const value = Number(readEnv(process.env, name));
  return Number.isFinite(value) && value >= 0 ? value : undefined;
}
