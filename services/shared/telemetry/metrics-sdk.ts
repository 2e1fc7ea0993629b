/**
 * The process's OpenTelemetry MeterProvider, separate from the tracing NodeSDK so that metrics
 * can be on while tracing is off (a Prometheus scrape needs no collector).
 *
 * Readers:
 * - OTLP, from the same variables as traces: OTEL_EXPORTER_OTLP_METRICS_ENDPOINT or
 *   OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_METRICS_PROTOCOL or OTEL_EXPORTER_OTLP_PROTOCOL
 *   (http/protobuf by default, http/json, grpc), every OTEL_METRIC_EXPORT_INTERVAL ms (60000);
 *   OTEL_METRICS_EXPORTER=none or OTEL_SDK_DISABLED=true turns it off.
 * - Prometheus, when the host serves `/metrics` on KEYMESH_METRICS_PORT (`metrics-server.ts`).
 *
 * Histograms carry no exemplars: the JavaScript SDK (sdk-metrics 2.12) ships exemplar filters
 * and reservoirs but does not attach them to aggregations, and the Prometheus exporter writes
 * the text format, which has no exemplars. Batch traces are found by time and duration instead
 * (README, "From a slow batch to its trace").
 */
import { setTimeout as delay } from "node:timers/promises";
import { metrics } from "@opentelemetry/api";
import type { PrometheusExporter } from "@opentelemetry/exporter-prometheus";
import type { MeterProvider, MetricReader, PushMetricExporter } from "@opentelemetry/sdk-metrics";
import { FLUSH_LIMIT_MS } from "./sdk.js";

/** What `startMetrics` decided. */
export interface MetricsState {
  readonly enabled: boolean;
  /** "http/protobuf", "http/json", "grpc" or "none". */
  readonly otlp: string;
  readonly prometheus: boolean;
  readonly reason?: string;
}

/** Options of `startMetrics`. */
export interface StartMetricsOptions {
  /** Collect for a Prometheus scrape endpoint (the host passes KEYMESH_METRICS_PORT's presence). */
  readonly prometheus?: boolean;
  readonly env?: NodeJS.ProcessEnv;
  /** service.name unless OTEL_SERVICE_NAME is set: `keymesh-keys`, or `keymesh` for several services. */
  readonly serviceName?: string;
}

const DEFAULT_EXPORT_INTERVAL_MS = 60_000;

let state: MetricsState = { enabled: false, otlp: "none", prometheus: false, reason: "not started" };
let starting: Promise<MetricsState> | undefined;
let provider: MeterProvider | undefined;
let prometheus: PrometheusExporter | undefined;

/** The current metrics state. */
export function metricsState(): MetricsState {
  return state;
}

/** The Prometheus reader, when started with `prometheus: true`. */
export function prometheusExporter(): PrometheusExporter | undefined {
  return prometheus;
}

/** Decides the OTLP metrics exporter from the environment. Pure. */
export function resolveMetricsExport(env: NodeJS.ProcessEnv = process.env): { otlp: string; reason?: string } {
  const read = (name: string) => env[name]?.trim() || undefined;
  if (read("OTEL_SDK_DISABLED")?.toLowerCase() === "true") return { otlp: "none", reason: "OTEL_SDK_DISABLED" };
  const exporters = read("OTEL_METRICS_EXPORTER")?.split(",").map((s) => s.trim()) ?? ["otlp"];
  if (!exporters.includes("otlp")) return { otlp: "none", reason: `OTEL_METRICS_EXPORTER=${exporters.join(",")}` };
  if (!read("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") && !read("OTEL_EXPORTER_OTLP_ENDPOINT")) {
    return { otlp: "none", reason: "no OTLP endpoint configured" };
  }
  const protocol = read("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL") ?? read("OTEL_EXPORTER_OTLP_PROTOCOL") ?? "http/protobuf";
  if (protocol !== "http/protobuf" && protocol !== "http/json" && protocol !== "grpc") {
    return { otlp: "http/protobuf", reason: `unsupported OTLP protocol "${protocol}"` };
  }
  return { otlp: protocol };
}

/**
 * Starts the MeterProvider when OTLP export or a Prometheus endpoint asks for it and installs
 * it globally. Idempotent: the first call decides. Without either, nothing is loaded and every
 * metric records into the API's no-op meter.
 */
export function startMetrics(opts: StartMetricsOptions = {}): Promise<MetricsState> {
  starting ??= start(opts);
  return starting;
}

async function start(opts: StartMetricsOptions): Promise<MetricsState> {
  const env = opts.env ?? process.env;
  const decided = resolveMetricsExport(env);
  // KEYMESH_METRICS_PORT is keymesh's own switch: OTEL_SDK_DISABLED turns off OTLP export only.
  const wantPrometheus = opts.prometheus ?? false;
  if (decided.otlp === "none" && !wantPrometheus) {
    state = { enabled: false, otlp: "none", prometheus: false, reason: decided.reason ?? "no reader" };
    return state;
  }
  const [{ MeterProvider, PeriodicExportingMetricReader }, { defaultResource, detectResources, envDetector, processDetector, hostDetector, resourceFromAttributes }] = await Promise.all([
    import("@opentelemetry/sdk-metrics"),
    import("@opentelemetry/resources"),
  ]);
  const readers: MetricReader[] = [];
  if (decided.otlp !== "none") {
    const interval = Number(env.OTEL_METRIC_EXPORT_INTERVAL);
    const exportIntervalMillis = Number.isFinite(interval) && interval > 0 ? interval : DEFAULT_EXPORT_INTERVAL_MS;
    readers.push(
      new PeriodicExportingMetricReader({
        exporter: await createOtlpExporter(decided.otlp),
        exportIntervalMillis,
        exportTimeoutMillis: Math.min(30_000, exportIntervalMillis),
      }),
    );
  }
  if (wantPrometheus) {
    const { PrometheusExporter } = await import("@opentelemetry/exporter-prometheus");
    // The host serves the handler on its own port; the exporter's built-in server stays off.
    // Every series is scope "keymesh": no otel_scope_name label on each line.
    prometheus = new PrometheusExporter({ preventServerStart: true, withoutScopeInfo: true });
    readers.push(prometheus);
  }
  provider = new MeterProvider({
    // Later wins: the SDK's defaults, then our name, then OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES.
    resource: defaultResource()
      .merge(resourceFromAttributes(opts.serviceName === undefined ? {} : { "service.name": opts.serviceName }))
      .merge(detectResources({ detectors: [envDetector, processDetector, hostDetector] })),
    readers,
  });
  metrics.setGlobalMeterProvider(provider);
  state = { enabled: true, otlp: decided.otlp, prometheus: wantPrometheus, ...(decided.reason === undefined ? {} : { reason: decided.reason }) };
  return state;
}

/**
 * Exports what was recorded so far over OTLP, waiting at most FLUSH_LIMIT_MS (like traces): a
 * collector that never answers must not hold a shutdown. Never rejects.
 */
export async function flushMetrics(): Promise<void> {
  if (provider === undefined) return;
  await bounded(provider.forceFlush());
}

/** Final export and stop, bounded like `flushMetrics`; later recordings are dropped. Never rejects. */
export async function shutdownMetrics(): Promise<void> {
  if (provider === undefined) return;
  await bounded(provider.shutdown());
}

async function bounded(work: Promise<void>): Promise<void> {
  const stop = new AbortController();
  await Promise.race([work.catch(() => undefined), delay(FLUSH_LIMIT_MS, undefined, { ref: false, signal: stop.signal }).catch(() => undefined)]);
  stop.abort();
}

async function createOtlpExporter(protocol: string): Promise<PushMetricExporter> {
  switch (protocol) {
    case "grpc":
      return new (await import("@opentelemetry/exporter-metrics-otlp-grpc")).OTLPMetricExporter();
    case "http/json":
      return new (await import("@opentelemetry/exporter-metrics-otlp-http")).OTLPMetricExporter();
    default:
      return new (await import("@opentelemetry/exporter-metrics-otlp-proto")).OTLPMetricExporter();
  }
}
