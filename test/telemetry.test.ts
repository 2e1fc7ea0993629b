import { createServer } from "node:http2";
import type { AddressInfo } from "node:net";
import { Code, ConnectError, createClient, createRouterTransport, type ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter, createGrpcTransport } from "@connectrpc/connect-node";
import { context, propagation, ProxyTracerProvider, SpanKind, SpanStatusCode, trace, type Span } from "@opentelemetry/api";
import { InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from "@opentelemetry/sdk-trace-base";
import { NodeTracerProvider } from "@opentelemetry/sdk-trace-node";
import { afterAll, beforeEach, describe, expect, it, vi } from "vitest";
import { Health, HealthCheckResponse_ServingStatus } from "../gen/grpc/health/v1/health_pb.js";
import {
  createClientTracingInterceptor,
  createTracingInterceptor,
  withSpan,
  type ServerTracingInterceptorOptions,
} from "../services/shared/telemetry/interceptors.js";
import { resolveTraceExport } from "../services/shared/telemetry/sdk.js";
import { meshServiceName } from "../services/shared/telemetry/service-name.js";
import { describeSqlSpan } from "../services/shared/telemetry/sql-spans.js";

const SERVING = HealthCheckResponse_ServingStatus.SERVING;
const exporter = new InMemorySpanExporter();
const provider = new NodeTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
// Global provider, AsyncLocalStorage context manager and W3C propagators, as the preload installs.
provider.register();
afterAll(() => provider.shutdown());
beforeEach(() => exporter.reset());

/** What the handlers saw, to check that the server span was the active context. */
const seen: { spanIds: string[]; baggage: string[]; closed: boolean } = { spanIds: [], baggage: [], closed: false };
const activeSpanId = () => trace.getActiveSpan()?.spanContext().spanId ?? "none";

function healthRoutes(router: ConnectRouter) {
  router.service(Health, {
    check(req) {
      seen.spanIds.push(activeSpanId());
      seen.baggage.push(propagation.getActiveBaggage()?.getEntry("tenant")?.value ?? "");
      switch (req.service) {
        case "unavailable":
          throw new ConnectError("database down", Code.Unavailable);
        case "invalid":
          throw new ConnectError("no such service name", Code.InvalidArgument);
        case "bug":
          throw new Error("undefined is not a function");
      }
      return { status: SERVING };
    },
    async *watch(req) {
      try {
        for (let i = 0; req.service === "forever" || i < 3; i++) {
          await withSpan("health.probe", { "keymesh.round": i }, () => {
            seen.spanIds.push(activeSpanId());
          });
          yield { status: SERVING };
          // Like a real Watch, wait between updates; a flood of writes would block on
          // HTTP/2 flow control, and Connect leaves a generator stuck there suspended.
          if (req.service === "forever") await new Promise((resolve) => setTimeout(resolve, 5));
        }
      } finally {
        seen.closed = true;
      }
    },
  });
}

function createHealthClient(server: ServerTracingInterceptorOptions = {}) {
  return createClient(
    Health,
    createRouterTransport(healthRoutes, {
      router: { interceptors: [createTracingInterceptor(server)] },
      transport: { interceptors: [createClientTracingInterceptor()] },
    }),
  );
}

/** Waits until the client and the server span of `method` have both ended. */
async function rpcSpans(method: string): Promise<{ client: ReadableSpan; server: ReadableSpan }> {
  const name = `grpc.health.v1.Health/${method}`;
  return vi.waitFor(() => {
    const spans = exporter.getFinishedSpans().filter((s) => s.name === name);
    const client = spans.find((s) => s.kind === SpanKind.CLIENT);
    const server = spans.find((s) => s.kind === SpanKind.SERVER);
    if (!client || !server) throw new Error(`${name}: spans not ended yet`);
    return { client, server };
  });
}

const messages = (span: ReadableSpan, type: "SENT" | "RECEIVED") =>
  span.events.filter((e) => e.name === "message" && e.attributes?.["message.type"] === type).map((e) => e.attributes?.["message.id"]);

describe("tracing interceptors", () => {
  it("traces a unary call on both ends of one trace", async () => {
    seen.spanIds = [];
    seen.baggage = [];
    const bag = propagation.createBaggage({ tenant: { value: "acme" } });
    const res = await context.with(propagation.setBaggage(context.active(), bag), () =>
      createHealthClient().check({ service: "vault" }),
    );
    expect(res.status).toBe(SERVING);

    const { client, server } = await rpcSpans("Check");
    expect(server.spanContext().traceId).toBe(client.spanContext().traceId);
    expect(server.parentSpanContext?.spanId).toBe(client.spanContext().spanId);
    for (const span of [client, server]) {
      expect(span.attributes).toMatchObject({
        "rpc.system": "connect_rpc",
        "rpc.service": "grpc.health.v1.Health",
        "rpc.method": "Check",
        "rpc.grpc.status_code": 0,
      });
      expect(span.status.code).toBe(SpanStatusCode.UNSET);
      expect(messages(span, "SENT")).toEqual([1]);
      expect(messages(span, "RECEIVED")).toEqual([1]);
    }
    // The handler ran inside the server span and received the caller's baggage.
    expect(seen.spanIds).toEqual([server.spanContext().spanId]);
    expect(seen.baggage).toEqual(["acme"]);
  });

  it("marks server spans as errors only for server-side codes", async () => {
    const client = createHealthClient();
    await expect(client.check({ service: "unavailable" })).rejects.toMatchObject({ code: Code.Unavailable });
    let spans = await rpcSpans("Check");
    expect(spans.server.attributes["rpc.grpc.status_code"]).toBe(Code.Unavailable);
    expect(spans.server.attributes["rpc.connect_rpc.error_code"]).toBe("unavailable");
    expect(spans.server.status).toEqual({ code: SpanStatusCode.ERROR, message: "database down" });
    expect(spans.client.status.code).toBe(SpanStatusCode.ERROR);

    exporter.reset();
    await expect(client.check({ service: "invalid" })).rejects.toMatchObject({ code: Code.InvalidArgument });
    spans = await rpcSpans("Check");
    expect(spans.server.attributes["rpc.grpc.status_code"]).toBe(Code.InvalidArgument);
    expect(spans.server.status.code).toBe(SpanStatusCode.UNSET);
    // The caller did not get what it asked for: an error on its side.
    expect(spans.client.status.code).toBe(SpanStatusCode.ERROR);

    exporter.reset();
    await expect(client.check({ service: "bug" })).rejects.toBeInstanceOf(ConnectError);
    spans = await rpcSpans("Check");
    expect(spans.server.status.code).toBe(SpanStatusCode.ERROR);
  });

  it("counts stream messages and keeps the server span active inside the stream", async () => {
    seen.spanIds = [];
    const statuses = [];
    for await (const res of createHealthClient().watch({ service: "vault" })) statuses.push(res.status);
    expect(statuses).toEqual([SERVING, SERVING, SERVING]);

    const { client, server } = await rpcSpans("Watch");
    expect(server.parentSpanContext?.spanId).toBe(client.spanContext().spanId);
    expect(messages(client, "SENT")).toEqual([1]);
    expect(messages(client, "RECEIVED")).toEqual([1, 2, 3]);
    expect(messages(server, "RECEIVED")).toEqual([1]);
    expect(messages(server, "SENT")).toEqual([1, 2, 3]);
    expect(server.attributes).toMatchObject({ "rpc.message.sent_count": 3, "rpc.grpc.status_code": 0 });
    expect(client.attributes).toMatchObject({ "rpc.message.received_count": 3, "rpc.grpc.status_code": 0 });

    // Work done by the generator between yields is parented on the server span.
    const probes = exporter.getFinishedSpans().filter((s) => s.name === "health.probe");
    expect(probes).toHaveLength(3);
    for (const probe of probes) expect(probe.parentSpanContext?.spanId).toBe(server.spanContext().spanId);
    expect(new Set(seen.spanIds)).toEqual(new Set(probes.map((p) => p.spanContext().spanId)));
  });

  it("ends both spans and closes the handler when the client cancels a stream", async () => {
    // A real HTTP/2 server: the in-memory router transport never closes an abandoned handler stream.
    seen.closed = false;
    const server = createServer(connectNodeAdapter({ routes: healthRoutes, interceptors: [createTracingInterceptor()] }));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      const client = createClient(Health, createGrpcTransport({ baseUrl, interceptors: [createClientTracingInterceptor()] }));
      const abort = new AbortController();
      let received = 0;
      await expect(
        (async () => {
          for await (const _ of client.watch({ service: "forever" }, { signal: abort.signal })) {
            if (++received === 2) abort.abort();
          }
        })(),
      ).rejects.toMatchObject({ code: Code.Canceled });

      const { client: clientSpan, server: serverSpan } = await rpcSpans("Watch");
      expect(serverSpan.attributes).toMatchObject({ "rpc.system": "grpc", "rpc.grpc.status_code": Code.Canceled });
      expect(serverSpan.status.code).toBe(SpanStatusCode.UNSET);
      expect(clientSpan.attributes["rpc.grpc.status_code"]).toBe(Code.Canceled);
      expect(messages(clientSpan, "RECEIVED").length).toBeGreaterThanOrEqual(2);
      // return() went through the interceptor's wrapper to the generator: its finally ran.
      await vi.waitFor(() => expect(seen.closed).toBe(true));
    } finally {
      server.close();
    }
  });

  it("starts a new linked trace when remote parents are not trusted", async () => {
    await createHealthClient({ trustRemote: false }).check({ service: "vault" });
    const { client, server } = await rpcSpans("Check");
    expect(server.parentSpanContext).toBeUndefined();
    expect(server.spanContext().traceId).not.toBe(client.spanContext().traceId);
    expect(server.links.map((l) => l.context.spanId)).toEqual([client.spanContext().spanId]);
  });

  it("passes calls through untouched when telemetry is off", async () => {
    const off = { tracerProvider: new ProxyTracerProvider() };
    const client = createClient(
      Health,
      createRouterTransport(healthRoutes, {
        router: { interceptors: [createTracingInterceptor(off)] },
        transport: { interceptors: [createClientTracingInterceptor(off)] },
      }),
    );
    expect((await client.check({ service: "vault" })).status).toBe(SERVING);
    let watched = 0;
    for await (const _ of client.watch({ service: "vault" })) watched++;
    expect(watched).toBe(3);
    expect(exporter.getFinishedSpans().filter((s) => s.name.startsWith("grpc.health"))).toEqual([]);
  });

  it("leaves filtered calls untraced", async () => {
    const client = createClient(
      Health,
      createRouterTransport(healthRoutes, {
        router: { interceptors: [createTracingInterceptor({ filter: (req) => req.method.name !== "Check" })] },
      }),
    );
    await client.check({ service: "vault" });
    expect(exporter.getFinishedSpans()).toEqual([]);
  });
});

describe("withSpan", () => {
  it("records the exception, sets error status and rethrows the same error", async () => {
    const boom = new Error("lease lost");
    let inner: Span | undefined;
    await expect(
      withSpan("lease.acquire", { "keymesh.holder": "w1" }, (span) => {
        inner = span;
        throw boom;
      }),
    ).rejects.toBe(boom);
    const [span] = exporter.getFinishedSpans();
    expect(span?.spanContext().spanId).toBe(inner?.spanContext().spanId);
    expect(span?.attributes["keymesh.holder"]).toBe("w1");
    expect(span?.status).toEqual({ code: SpanStatusCode.ERROR, message: "lease lost" });
    expect(span?.events.map((e) => e.name)).toEqual(["exception"]);
  });

  it("parents spans started inside it", async () => {
    const result = await withSpan("signing.batch", {}, () => withSpan("signing.sign", {}, async () => 42));
    expect(result).toBe(42);
    const [child, parent] = exporter.getFinishedSpans();
    expect(child?.parentSpanContext?.spanId).toBe(parent?.spanContext().spanId);
  });
});

describe("calls between mesh services", () => {
  /** Health.Check whose handler runs two domain spans, the first of which may fail. */
  function meshClient() {
    const routes = (router: ConnectRouter) =>
      router.service(Health, {
        async check(req) {
          await withSpan("lease.acquire", { "keymesh.holder": "w1" }, (span) => {
            span.setAttribute("keymesh.key_id", "k1");
            if (req.service === "busy") throw new ConnectError("all keys are leased", Code.ResourceExhausted);
          });
          await withSpan("lease.audit", {}, () => undefined);
          return { status: SERVING };
        },
      });
    return createClient(
      Health,
      createRouterTransport(routes, {
        router: { interceptors: [createTracingInterceptor()] },
        transport: { interceptors: [createClientTracingInterceptor({ clientSpans: "failures" })] },
      }),
    );
  }

  it("records a successful call as the server span under the caller's span, the handler's own withSpan folded into it", async () => {
    await withSpan("signing.batch", {}, () => meshClient().check({ service: "ok" }));
    const spans = exporter.getFinishedSpans();
    expect(spans.map((s) => `${SpanKind[s.kind]}:${s.name}`).sort()).toEqual(["INTERNAL:lease.audit", "INTERNAL:signing.batch", "SERVER:grpc.health.v1.Health/Check"]);
    const batch = spans.find((s) => s.name === "signing.batch")!;
    const server = spans.find((s) => s.kind === SpanKind.SERVER)!;
    expect(server.parentSpanContext?.spanId).toBe(batch.spanContext().spanId);
    expect(server.attributes).toMatchObject({ "keymesh.operation": "lease.acquire", "keymesh.holder": "w1", "keymesh.key_id": "k1" });
    // Only the first withSpan folds: the next one is a span of its own, under the server span.
    expect(spans.find((s) => s.name === "lease.audit")?.parentSpanContext?.spanId).toBe(server.spanContext().spanId);
  });

  it("records a failed call as a client span too, and the handler's error on the server span with the call's status", async () => {
    const started = Date.now();
    await withSpan("signing.batch", {}, () => meshClient().check({ service: "busy" })).catch(() => undefined);
    const spans = exporter.getFinishedSpans();
    const batch = spans.find((s) => s.name === "signing.batch")!;
    const client = spans.find((s) => s.kind === SpanKind.CLIENT)!;
    const server = spans.find((s) => s.kind === SpanKind.SERVER)!;
    expect(client.parentSpanContext?.spanId).toBe(batch.spanContext().spanId);
    expect(client.attributes["rpc.grpc.status_code"]).toBe(Code.ResourceExhausted);
    expect(client.status.code).toBe(SpanStatusCode.ERROR);
    expect(client.startTime[0] * 1000 + client.startTime[1] / 1e6).toBeGreaterThanOrEqual(started - 1);
    expect(client.startTime[0] * 1e9 + client.startTime[1]).toBeLessThanOrEqual(server.startTime[0] * 1e9 + server.startTime[1]);
    // Busy is the caller's condition, not a server fault: an exception event, status unset.
    expect(server.events.map((e) => e.name)).toContain("exception");
    expect(server.status.code).toBe(SpanStatusCode.UNSET);
    expect(spans.some((s) => s.name === "lease.acquire" || s.name === "lease.audit")).toBe(false);
  });
});

describe("resolveTraceExport", () => {
  it("stays off without an endpoint and honours the standard variables", () => {
    expect(resolveTraceExport({}).enabled).toBe(false);
    const endpoint = { OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4318" };
    expect(resolveTraceExport(endpoint)).toEqual({ enabled: true, exporter: "http/protobuf", endpoint: "http://127.0.0.1:4318/v1/traces" });
    expect(resolveTraceExport({ ...endpoint, OTEL_EXPORTER_OTLP_PROTOCOL: "grpc" })).toMatchObject({ exporter: "grpc", endpoint: "http://127.0.0.1:4318" });
    expect(resolveTraceExport({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://x/v1/traces", OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: "http/json" })).toMatchObject({
      exporter: "http/json",
      endpoint: "http://x/v1/traces",
    });
    // The operator's service.name, from either standard variable, names every span.
    expect(resolveTraceExport({ ...endpoint, OTEL_SERVICE_NAME: "edge" }).serviceName).toBe("edge");
    expect(resolveTraceExport({ ...endpoint, OTEL_RESOURCE_ATTRIBUTES: "team=x,service.name=edge%20a" }).serviceName).toBe("edge a");
    expect(resolveTraceExport(endpoint).serviceName).toBeUndefined();
    expect(resolveTraceExport({ ...endpoint, OTEL_SDK_DISABLED: "true" }).enabled).toBe(false);
    expect(resolveTraceExport({ ...endpoint, OTEL_TRACES_EXPORTER: "none" }).enabled).toBe(false);
  });
});

describe("SQL span names", () => {
  const knex = (attributes: Record<string, unknown>) => describeSqlSpan(attributes);

  it("names spans `{operation} {table}` without the SQLite file's path", () => {
    const facts = knex({
      "db.system.name": "better-sqlite3",
      "db.namespace": "/home/someone/keymesh/data/keymesh.sqlite",
      "db.operation.name": "select",
      "db.collection.name": "records as r",
      "db.query.text": "select `r`.`id` from `records` as `r` where `r`.`id` > ? limit ?",
    });
    expect(facts).toEqual({ name: "SELECT records", operation: "SELECT", table: "records", procedure: undefined, system: "sqlite", namespace: "keymesh.sqlite" });
  });

  it("reads the verb and table from the statement when knex does not know them", () => {
    expect(knex({ "db.system.name": "mysql2", "db.namespace": "keymesh", "db.operation.name": "raw", "db.query.text": "insert into `signatures` (`record_id`) values (?)" })).toMatchObject({
      name: "INSERT signatures",
      system: "mysql",
      namespace: "keymesh",
    });
    expect(knex({ "db.system.name": "mysql2", "db.operation.name": "del", "db.query.text": "delete from `key_leases` where `key_id` = ?" }).name).toBe("DELETE key_leases");
    expect(knex({ "db.system.name": "mysql2", "db.operation.name": "update", "db.collection.name": "keymesh.records" }).name).toBe("UPDATE records");
    expect(knex({ "db.system.name": "sqlite", "db.query.text": "create table if not exists \"jobs\" (\"id\" integer)" }).name).toBe("CREATE jobs");
    expect(knex({ "db.system.name": "mysql2", "db.operation.name": "first" }).name).toBe("SELECT");
    expect(knex({ "db.system.name": "mysql2", "db.query.text": "select ? as service" }).name).toBe("SELECT");
    expect(knex({ "db.system.name": "mysql2" }).name).toBe("mysql");
  });

  it("names a stored procedure's call after the procedure", () => {
    expect(knex({ "db.system.name": "mysql", "db.query.text": "CALL keymesh_open_key_grant(?, ?, ?, ?, ?)" })).toMatchObject({
      name: "CALL keymesh_open_key_grant",
      operation: "CALL",
      procedure: "keymesh_open_key_grant",
    });
  });
});

describe("service names", () => {
  it("derives a service's name from its proto package", () => {
    expect(meshServiceName("keymesh.keys.v1.KeyManagementService")).toBe("keymesh-keys");
    expect(meshServiceName("keymesh.executor.v1.ExecutorService")).toBe("keymesh-executor");
    expect(meshServiceName("grpc.health.v1.Health")).toBeUndefined();
  });
});
