/**
 * The metrics plumbing in one process: message sizes as otelconnect-go's `proto.Size`, the RPC
 * metrics interceptors on a real HTTP/2 server and gRPC client, the domain-metric helper
 * rebinding to a new provider, and trace ids on log lines written inside a span.
 */
import { packRecords } from "../services/shared/records/blocks.js";
import { Writable } from "node:stream";
import { createServer } from "node:http2";
import type { AddressInfo } from "node:net";
import { create, toBinary, type DescMessage } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter, createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { metrics, trace } from "@opentelemetry/api";
import { AggregationTemporality, MeterProvider, MetricReader, type HistogramMetricData, type MetricData } from "@opentelemetry/sdk-metrics";
import { NodeTracerProvider } from "@opentelemetry/sdk-trace-node";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { Health, HealthCheckResponse_ServingStatus } from "../gen/grpc/health/v1/health_pb.js";
import { ClaimBatchResponseSchema, CommitBatchRequestSchema } from "../gen/keymesh/collection/v1/collection_service_pb.js";
import { JobProgressSchema } from "../gen/keymesh/executor/v1/executor_service_pb.js";
import { SignStreamResponseSchema } from "../gen/keymesh/signing/v1/signing_service_pb.js";
import { AddSecretVersionRequestSchema, CreateSecretRequestSchema } from "../gen/keymesh/vault/v1/vault_service_pb.js";
import { ConfigError, loadConfig } from "../services/shared/config.js";
import { createLogger } from "../services/shared/logger.js";
import { counter } from "../services/shared/telemetry/metrics.js";
import { createClientMetricsInterceptor, createServerMetricsInterceptor, statusAttributes } from "../services/shared/telemetry/metrics-interceptor.js";
import { protoSize } from "../services/shared/telemetry/proto-size.js";

/** A reader the test collects from on demand. */
class TestReader extends MetricReader {
  constructor() {
    super({ aggregationTemporalitySelector: () => AggregationTemporality.CUMULATIVE });
  }
  protected override async onForceFlush(): Promise<void> {}
  protected override async onShutdown(): Promise<void> {}
  async metricsByName(): Promise<Map<string, MetricData>> {
    const { resourceMetrics } = await this.collect();
    return new Map(resourceMetrics.scopeMetrics.flatMap((s) => s.metrics).map((m) => [m.descriptor.name, m]));
  }
}

describe("protoSize", () => {
  const bytes = (n: number, fill = 7) => new Uint8Array(n).fill(fill);
  const cases: [string, DescMessage, unknown][] = [
    ["empty", ClaimBatchResponseSchema, create(ClaimBatchResponseSchema)],
    [
      "a claim of 1000 records",
      ClaimBatchResponseSchema,
      create(ClaimBatchResponseSchema, {
        claimId: "c-1",
        expiresAtMs: 1_764_000_000_000n,
        records: packRecords(Array.from({ length: 1000 }, (_, i) => ({ id: i * 997 + 1, payload: bytes(i % 300) }))),
      }),
    ],
    [
      "a commit",
      CommitBatchRequestSchema,
      create(CommitBatchRequestSchema, { claimId: "é-ü", batchId: "b", keyId: "k", fence: 2n ** 40n, signatures: { recordIds: [5n], signatures: bytes(64) } }),
    ],
    ["doubles, enums and negatives", JobProgressSchema, create(JobProgressSchema, { recordsPerSecond: 1234.5, state: 2, batchesCommitted: 300, elapsedMs: -1n })],
    ["a oneof", SignStreamResponseSchema, create(SignStreamResponseSchema, { batchId: "b", result: { case: "error", value: { code: "aborted", message: "lost" } } })],
    ["a map", CreateSecretRequestSchema, create(CreateSecretRequestSchema, { labels: { team: "pay", "ünï": "cödé" } })],
    ["an explicit-presence field set to zero", AddSecretVersionRequestSchema, create(AddSecretVersionRequestSchema, { expectedVersion: 0 })],
  ];
  for (const [name, schema, message] of cases) {
    it(`equals the encoded length: ${name}`, () => {
      expect(protoSize(schema, message)).toBe(toBinary(schema, message as never).byteLength);
    });
  }
});

describe("RPC metrics interceptors", () => {
  const reader = new TestReader();
  const meterProvider = new MeterProvider({ readers: [reader] });
  let url = "";
  let close: () => Promise<void> = async () => undefined;

  function routes(router: ConnectRouter) {
    router.service(Health, {
      check(req) {
        if (req.service === "down") throw new ConnectError("database down", Code.Unavailable);
        return { status: HealthCheckResponse_ServingStatus.SERVING };
      },
      async *watch() {
        for (let i = 0; i < 3; i++) yield { status: HealthCheckResponse_ServingStatus.SERVING };
      },
    });
  }

  beforeAll(async () => {
    const server = createServer(connectNodeAdapter({ routes, interceptors: [createServerMetricsInterceptor({ meterProvider })] }));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const sessions = new Set<import("node:http2").ServerHttp2Session>();
    server.on("session", (session) => {
      sessions.add(session);
      session.once("close", () => sessions.delete(session));
    });
    close = () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        for (const session of sessions) session.destroy();
      });
  });
  afterAll(async () => {
    await close();
    await meterProvider.shutdown();
  });

  const points = (m: MetricData | undefined) => (m as HistogramMetricData | undefined)?.dataPoints ?? [];

  it("records duration, sizes and message counts by service, method and code on both ends", async () => {
    const client = createClient(Health, createGrpcTransport({ baseUrl: url, interceptors: [createClientMetricsInterceptor({ meterProvider })] }));
    await client.check({ service: "keys" });
    await expect(client.check({ service: "down" })).rejects.toThrow(/database down/);
    const statuses = [];
    for await (const res of client.watch({ service: "" })) statuses.push(res.status);
    expect(statuses).toHaveLength(3);

    const byName = await reader.metricsByName();
    for (const side of ["server", "client"]) {
      const duration = points(byName.get(`rpc.${side}.duration`));
      expect(byName.get(`rpc.${side}.duration`)?.descriptor.unit).toBe("ms");
      const check = (code: number) =>
        duration.find((p) => p.attributes["rpc.method"] === "Check" && p.attributes["rpc.grpc.status_code"] === code);
      expect(check(0)?.attributes).toMatchObject({ "rpc.system": "grpc", "rpc.service": "grpc.health.v1.Health" });
      expect(check(0)?.value.count, side).toBe(1);
      expect(check(Code.Unavailable)?.value.count, side).toBe(1);
      const watch = points(byName.get(`rpc.${side}.responses_per_rpc`)).find((p) => p.attributes["rpc.method"] === "Watch");
      expect(watch?.value.sum, `${side} responses per Watch`).toBe(3);
      const sizes = points(byName.get(`rpc.${side}.response.size`)).filter((p) => p.attributes["rpc.method"] === "Watch");
      expect(sizes.reduce((n, p) => n + p.value.count, 0), `${side} Watch response sizes`).toBe(3);
      // HealthCheckRequest{service:"keys"}: tag + length + 4 bytes.
      const requestSize = points(byName.get(`rpc.${side}.request.size`)).find(
        (p) => p.attributes["rpc.method"] === "Check" && p.attributes["rpc.grpc.status_code"] === 0,
      );
      expect(requestSize?.value.sum, side).toBe(6);
    }
  });

  it("labels Connect-protocol errors with the Connect code name, as otelconnect-go does", async () => {
    const client = createClient(Health, createConnectTransport({ baseUrl: url, httpVersion: "2" }));
    await expect(client.check({ service: "down" })).rejects.toThrow();
    const duration = points((await reader.metricsByName()).get("rpc.server.duration"));
    const failed = duration.find((p) => p.attributes["rpc.system"] === "connect_rpc");
    expect(failed?.attributes["rpc.connect_rpc.error_code"]).toBe("unavailable");
    expect(failed?.attributes["rpc.grpc.status_code"]).toBeUndefined();
    expect(statusAttributes("connect_rpc", undefined)).toEqual({});
    expect(statusAttributes("grpc_web", new ConnectError("x", Code.NotFound))).toEqual({ "rpc.grpc_web.status_code": Code.NotFound });
  });
});

describe("the domain-metric helper", () => {
  it("binds to whichever global MeterProvider is installed when it records", async () => {
    const signed = counter("keymesh.test.helper", "{thing}", "A test counter");
    signed.add(5); // no SDK yet: the no-op meter
    const reader = new TestReader();
    const provider = new MeterProvider({ readers: [reader] });
    metrics.setGlobalMeterProvider(provider);
    try {
      signed.add(2, { kind: "a" });
      signed.add(3, { kind: "a" });
      const m = (await reader.metricsByName()).get("keymesh.test.helper");
      expect(m?.dataPoints.map((p) => [p.attributes, p.value])).toEqual([[{ kind: "a" }, 5]]);
      expect(() => counter("keymesh.test.helper", "{thing}", "again")).toThrow(/declared twice/);
    } finally {
      metrics.disable();
      await provider.shutdown();
    }
  });
});

describe("log lines", () => {
  const tracerProvider = new NodeTracerProvider();
  let lines: Record<string, unknown>[] = [];
  const destination = new Writable({
    write(chunk, _enc, done) {
      lines.push(JSON.parse(String(chunk)) as Record<string, unknown>);
      done();
    },
  });
  beforeAll(() => tracerProvider.register());
  beforeEach(() => {
    lines = [];
  });
  afterAll(async () => {
    trace.disable();
    await tracerProvider.shutdown();
  });

  it("carry trace_id and span_id inside a traced call, and not outside", async () => {
    const logger = createLogger({ destination });
    const tracer = trace.getTracer("test");
    let ids = { traceId: "", spanId: "" };
    await tracer.startActiveSpan("work", async (span) => {
      ids = span.spanContext();
      await new Promise((resolve) => setTimeout(resolve, 1));
      logger.child({ service: "keys" }).info("inside");
      span.end();
    });
    logger.info("outside");
    expect(lines[0]).toMatchObject({ msg: "inside", trace_id: ids.traceId, span_id: ids.spanId });
    expect(lines[1]?.msg).toBe("outside");
    expect(lines[1]).not.toHaveProperty("trace_id");
  });
});

describe("KEYMESH_METRICS_PORT", () => {
  it("is off by default and must be a port other than the service port", () => {
    expect(loadConfig({}).metricsPort).toBeUndefined();
    expect(loadConfig({ KEYMESH_METRICS_PORT: "9464" }).metricsPort).toBe(9464);
    expect(loadConfig({ KEYMESH_METRICS_PORT: "0", KEYMESH_PORT: "0" }).metricsPort).toBe(0);
    for (const env of [{ KEYMESH_METRICS_PORT: "metrics" }, { KEYMESH_METRICS_PORT: "70000" }, { KEYMESH_METRICS_PORT: "8080" }]) {
      expect(() => loadConfig(env), JSON.stringify(env)).toThrow(ConfigError);
      expect(() => loadConfig(env)).toThrow(/^KEYMESH_METRICS_PORT: expected /);
    }
  });
});
