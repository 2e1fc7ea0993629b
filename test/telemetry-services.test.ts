/**
 * `keymesh serve` as a user runs it, exporting to an in-test OTLP receiver: all seven
 * services in one process must still show up as separate services (service.name per
 * service), SQL spans must be named by the database conventions without the SQLite file's
 * path, and an OTLP endpoint that is down must cost one warning and a bounded shutdown.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { CollectionService } from "../gen/keymesh/collection/v1/collection_service_pb.js";
import { ExecutorService, JobState } from "../gen/keymesh/executor/v1/executor_service_pb.js";
import { KeyManagementService } from "../gen/keymesh/keys/v1/key_management_service_pb.js";
import { startOtlpReceiver, type ReceivedSpan } from "./support/otlp-receiver.js";
import { readRootToken } from "../services/shared/root-token.js";
import { bearer } from "./support/host.js";
import { spawnKeymesh, type KeymeshProcess } from "./support/process.js";
import { freePort } from "./support/redis-nodes.js";

const dirs: string[] = [];
const procs: KeymeshProcess[] = [];
afterEach(async () => {
  for (const p of procs.splice(0)) {
    if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill("SIGKILL");
    await p.exited;
  }
});
afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

/** `keymesh serve` (all seven services, SQLite in a fresh data directory) with `env`. */
async function serve(env: Record<string, string>) {
  const dataDir = mkdtempSync(join(tmpdir(), "keymesh-otel-"));
  dirs.push(dataDir);
  // --dev, as `npm start` runs it: the test calls with the root token it writes.
  const proc = spawnKeymesh(["serve", "--port", "0", "--dev"], { KEYMESH_DATA_DIR: dataDir, OTEL_SERVICE_NAME: "", OTEL_RESOURCE_ATTRIBUTES: "", ...env });
  procs.push(proc);
  const serving = await proc.waitForLog((l) => l.msg === "keymesh serving", 60_000);
  const root = [bearer(readRootToken(dataDir)!)];
  return { proc, dataDir, url: String(serving.url), root };
}

const logLines = (proc: KeymeshProcess): Array<Record<string, unknown>> =>
  [...proc.stdout().split("\n"), ...proc.stderr().split("\n")]
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l) as Record<string, unknown>);

async function stop(proc: KeymeshProcess) {
  proc.child.kill("SIGTERM");
  return proc.exited;
}

describe("keymesh serve with tracing", () => {
  it("reports each of the seven services under its own service.name, SQL spans by table without file paths", async () => {
    const receiver = await startOtlpReceiver();
    try {
      const { proc, dataDir, url, root } = await serve({ OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_BSP_SCHEDULE_DELAY: "100" });

      // Start-up says where traces go and that the generated master keys are for development.
      const tracing = await proc.waitForLog((l) => typeof l.msg === "string" && l.msg.startsWith("tracing to"));
      expect(tracing).toMatchObject({ exporter: "http/protobuf", endpoint: `${receiver.url}/v1/traces` });
      const keys = await proc.waitForLog((l) => typeof l.msg === "string" && l.msg.includes("development master keys"));
      expect(keys).toMatchObject({ level: "warn", file: join(dataDir, "master-keys.json") });
      expect(String(keys.msg)).toContain("development only");
      expect(logLines(proc).filter((l) => String(l.msg).includes("development master keys"))).toHaveLength(1);

      const transport = createGrpcTransport({ baseUrl: url, interceptors: root });
      await createClient(CollectionService, transport).seedRecords({ count: 200 });
      await createClient(KeyManagementService, transport).createKeyringKeys({ count: 2 });
      let last;
      for await (const res of createClient(ExecutorService, transport).runJob({ spec: { batchSize: 100, concurrency: 2 } })) last = res.progress;
      expect(last?.state).toBe(JobState.SUCCEEDED);

      const committed = (s: ReceivedSpan) => s.name === "signing.batch" && s.attributes["keymesh.outcome"] === "committed";
      const signed = (s: ReceivedSpan) => s.name === "signing.run_batch";
      await receiver.waitFor((all) => all.filter(committed).length === 2 && all.some(signed), 20_000);
      expect((await stop(proc)).code).toBe(0);
      const spans = receiver.spans();

      expect(spans.filter((s) => !s.serviceName.startsWith("keymesh")).map((s) => `${s.serviceName}:${s.name}`)).toEqual([]);
      expect(spans.find(committed)?.serviceName).toBe("keymesh-executor");
      expect(spans.find(signed)?.serviceName).toBe("keymesh-signing");
      const byId = new Map(spans.map((s) => [s.spanId, s]));
      // Every server span is its service's: keymesh.<name>.v1.* → keymesh-<name>.
      const servers = spans.filter((s) => s.kind === "SERVER");
      for (const s of servers) expect(s.serviceName, s.name).toBe(`keymesh-${s.name.split(".")[1]}`);
      const serviceNames = new Set(servers.map((s) => s.serviceName));
      for (const name of ["keymesh-executor", "keymesh-keys", "keymesh-collection", "keymesh-signing"]) expect(serviceNames).toContain(name);
      // A request between services is one span in the callee, a child of the caller's span:
      // the signing service's batch claims from collection (a request on its ClaimStream).
      const claim = spans.find((s) => s.serviceName === "keymesh-collection" && s.name === "collection.claim");
      expect(byId.get(claim?.parentSpanId ?? "")?.serviceName).toBe("keymesh-signing");
      // No RPC client spans in the batch's trace: calls that succeed are recorded by their callee.
      expect(spans.filter((s) => s.kind === "CLIENT" && s.traceId === claim?.traceId && s.name.startsWith("keymesh.")).map((s) => s.name)).toEqual([]);

      // SQL: one span per statement, `{OPERATION} {table}`, no path anywhere, under the
      // service whose work caused it.
      const sql = spans.filter((s) => s.scope === "@opentelemetry/instrumentation-knex");
      expect(sql.length).toBeGreaterThan(0);
      for (const s of sql) {
        expect(s.name, s.name).toMatch(/^[A-Z]+( \w+)?$/);
        expect(s.attributes).toMatchObject({ "db.system.name": "sqlite", "db.system": "sqlite", "db.namespace": "keymesh.sqlite" });
        expect(JSON.stringify(s.attributes)).not.toContain(dataDir);
        expect(s.serviceName, s.name).toBe(byId.get(s.parentSpanId)?.serviceName);
      }
      const names = new Set(sql.map((s) => s.name));
      expect([...names].some((n) => n.startsWith("SELECT "))).toBe(true);
      expect([...names].some((n) => /^(INSERT|UPDATE) /.test(n))).toBe(true);
      expect(new Set(sql.map((s) => s.serviceName))).toContain("keymesh-collection");
    } finally {
      await receiver.close();
    }
  }, 120_000);

  it("says so at start when tracing is off", async () => {
    const { proc } = await serve({ OTEL_EXPORTER_OTLP_ENDPOINT: "", OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "" });
    const off = await proc.waitForLog((l) => typeof l.msg === "string" && l.msg.startsWith("tracing off"));
    expect(off.reason).toBe("no OTLP endpoint configured");
    expect(String(off.msg)).toContain("OTEL_EXPORTER_OTLP_ENDPOINT");
    expect((await stop(proc)).code).toBe(0);
  }, 90_000);

  it("warns once about a refused OTLP endpoint, naming it", async () => {
    const port = await freePort();
    const endpoint = `http://127.0.0.1:${port}`;
    const { proc, url, root } = await serve({ OTEL_EXPORTER_OTLP_ENDPOINT: endpoint, OTEL_BSP_SCHEDULE_DELAY: "100", OTEL_EXPORTER_OTLP_TIMEOUT: "1000" });
    const collection = createClient(CollectionService, createGrpcTransport({ baseUrl: url, interceptors: root }));
    await collection.seedRecords({ count: 5 });
    const warning = await proc.waitForLog((l) => l.level === "warn" && l.endpoint === `${endpoint}/v1/traces`, 30_000);
    expect(String(warning.error)).toMatch(/ECONNREFUSED/);
    // More spans, more failed exports: still the one line.
    for (let i = 0; i < 3; i++) await collection.seedRecords({ count: 5 });
    expect((await stop(proc)).code).toBe(0);
    expect(logLines(proc).filter((l) => l.level === "warn" && typeof l.endpoint === "string")).toHaveLength(1);
  }, 90_000);

  it("bounds the shutdown when the OTLP endpoint never answers", async () => {
    // Accepts connections and never replies: the exporter would wait out its timeout.
    const sockets: Socket[] = [];
    const silent: Server = createServer((socket) => void sockets.push(socket));
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
    const endpoint = `http://127.0.0.1:${(silent.address() as { port: number }).port}`;
    try {
      const { proc, url, root } = await serve({ OTEL_EXPORTER_OTLP_ENDPOINT: endpoint, OTEL_EXPORTER_OTLP_TIMEOUT: "120000" });
      await createClient(CollectionService, createGrpcTransport({ baseUrl: url, interceptors: root })).seedRecords({ count: 5 });
      const stopped = Date.now();
      const exit = await stop(proc);
      // Unbounded, the final export would hold the process for the exporter's 120 s.
      expect(Date.now() - stopped).toBeLessThan(30_000);
      expect(exit.code).toBe(0);
      const warnings = logLines(proc).filter((l) => l.level === "warn" && l.endpoint === `${endpoint}/v1/traces`);
      expect(warnings).toHaveLength(1);
      expect(String(warnings[0]!.msg)).toContain("2000 ms");
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => silent.close(() => resolve()));
    }
  }, 120_000);
});
