import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CollectionService } from "../gen/keymesh/collection/v1/collection_service_pb.js";
import { ExecutorService, JobState } from "../gen/keymesh/executor/v1/executor_service_pb.js";
import { KeyManagementService } from "../gen/keymesh/keys/v1/key_management_service_pb.js";
import { createTestDatabase, type TestDatabase } from "./support/mysql.js";
import { startOtlpReceiver, type OtlpReceiver, type ReceivedSpan } from "./support/otlp-receiver.js";
import { ensureRootToken } from "../services/shared/root-token.js";
import { bearer } from "./support/host.js";
import { spawnKeymesh, type KeymeshProcess } from "./support/process.js";
import { testRedisUrl } from "./support/redis.js";

/**
 * One signing batch is one trace across processes, linked to its job's span: keys+collection,
 * signing and executor each run in their own process and export OTLP to a receiver inside
 * the test.
 */
describe("signing batch tracing across processes", () => {
  let receiver: OtlpReceiver;
  let mysql: TestDatabase;
  let dataDir: string;
  const procs: KeymeshProcess[] = [];

  const serve = async (services: string[], env: Record<string, string>, serviceName: string) => {
    const proc = spawnKeymesh(["serve", ...services, "--port", "0", "--dev"], {
      ...env,
      OTEL_SERVICE_NAME: serviceName,
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
      OTEL_TRACES_SAMPLER: "always_on",
      OTEL_BSP_SCHEDULE_DELAY: "100",
    });
    procs.push(proc);
    const line = await proc.waitForLog((l) => l.msg === "keymesh serving");
    return String(line.url);
  };

  beforeAll(async () => {
    receiver = await startOtlpReceiver();
    mysql = await createTestDatabase();
    dataDir = mkdtempSync(join(tmpdir(), "keymesh-trace-"));
  });
  afterAll(async () => {
    for (const p of procs) p.child.kill("SIGKILL");
    await Promise.all(procs.map((p) => p.exited));
    await receiver?.close();
    await mysql?.drop();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it("makes the batch span the ancestor of the key, collection and signing work, SQL and Redis included", async () => {
    const env = {
      KEYMESH_DATABASE_URL: mysql.url,
      KEYMESH_REDIS_URL: testRedisUrl(),
      KEYMESH_MASTER_KEYS: `1:${randomBytes(32).toString("base64")}`,
      KEYMESH_DATA_DIR: dataDir,
      KEYMESH_SERVICE_TOKEN: `kms_${randomBytes(24).toString("base64url")}`,
    };
    // --dev processes sharing the data directory accept its root token: the test calls as root.
    const root = [bearer(ensureRootToken(dataDir).token)];
    const migrate = spawnKeymesh(["migrate"], env);
    expect((await migrate.exited).code).toBe(0);
    const keysUrl = await serve(["keys", "collection"], env, "keymesh-keys");
    const peers = { ...env, KEYMESH_KEYS_URL: keysUrl, KEYMESH_COLLECTION_URL: keysUrl };
    const signingUrl = await serve(["signing"], peers, "keymesh-signing");
    const executorUrl = await serve(["executor"], { ...peers, KEYMESH_SIGNING_URL: signingUrl }, "keymesh-executor");

    const collection = createClient(CollectionService, createGrpcTransport({ baseUrl: keysUrl, interceptors: root }));
    const keys = createClient(KeyManagementService, createGrpcTransport({ baseUrl: keysUrl, interceptors: root }));
    const executor = createClient(ExecutorService, createGrpcTransport({ baseUrl: executorUrl, interceptors: root }));
    await collection.seedRecords({ count: 300 });
    await keys.createKeyringKeys({ count: 3 });
    let last;
    for await (const res of executor.runJob({ spec: { batchSize: 100, concurrency: 2 } })) last = res.progress;
    expect(last?.state).toBe(JobState.SUCCEEDED);
    expect(last?.traceId).toMatch(/^[0-9a-f]{32}$/);

    const committed = (s: ReceivedSpan) => s.name === "signing.batch" && s.attributes["keymesh.outcome"] === "committed";
    const batch = (await receiver.waitFor((all) => all.some(committed), 15_000)).find(committed)!;
    expect(batch.serviceName).toBe("keymesh-executor");
    // Its own trace, a root, linked to the job's span (whose trace id the job reports).
    expect(batch.traceId).not.toBe(last!.traceId);
    expect(batch.parentSpanId).toBe("");
    expect(batch.links.map((l) => l.traceId)).toContain(last!.traceId);
    for (const attr of ["keymesh.job_id", "keymesh.batch_id", "keymesh.key_id", "keymesh.fence", "keymesh.record_count"]) {
      expect(batch.attributes, attr).toHaveProperty(attr);
    }

    // Wait until the spans of the three processes for this batch have arrived.
    const isUnder = (span: ReceivedSpan, spans: ReceivedSpan[]) => {
      const byId = new Map(spans.map((s) => [s.spanId, s]));
      for (let cur = byId.get(span.parentSpanId); cur; cur = byId.get(cur.parentSpanId)) if (cur.spanId === batch.spanId) return true;
      return false;
    };
    const descendants = async (pred: (s: ReceivedSpan) => boolean, what: string) => {
      const deadline = Date.now() + 15_000;
      for (;;) {
        const trace = receiver.spans().filter((s) => s.traceId === batch.traceId);
        const found = trace.filter((s) => pred(s) && isUnder(s, trace));
        if (found.length > 0) return found;
        if (Date.now() > deadline) throw new Error(`no ${what} under the batch span; trace has: ${trace.map((s) => `${s.serviceName}:${s.name}`).join(", ")}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    };
    // The batch's lease: acquired, or rotated from the worker's previous batch (whose lease that
    // rotation releases; a worker's last lease is released when it stops, outside any batch),
    // a request on the executor's LeaseStream: one span in the key service, with the key it granted.
    const leased = (s: ReceivedSpan) =>
      s.serviceName === "keymesh-keys" && ["lease.acquire", "lease.rotate"].includes(s.name) && s.attributes["keymesh.key_id"] === batch.attributes["keymesh.key_id"];
    await descendants(leased, "lease.acquire or lease.rotate span");
    // The claim and the commit are requests on signing's long-lived ClaimStream: one span each
    // in the collection service, from the request's trace context.
    const inCollection = (name: string) => (s: ReceivedSpan) => s.serviceName === "keymesh-keys" && s.name === name;
    await descendants(inCollection("collection.claim"), "collection.claim span");
    await descendants(inCollection("collection.commit"), "collection.commit span");
    // Work on the long-lived batch stream is attributed to this batch through the per-message
    // trace context: the signing service's span, and under it the claim and commit it sends.
    const sign = await descendants((s) => s.serviceName === "keymesh-signing" && s.name === "signing.run_batch", "signing span");
    expect(sign[0]!.attributes["keymesh.batch_id"]).toBe(batch.attributes["keymesh.batch_id"]);
    await descendants((s) => s.attributes["db.system"] === "mysql" || s.attributes["db.system.name"] === "mysql", "SQL span");
    await descendants((s) => s.attributes["db.system"] === "redis" || s.attributes["db.system.name"] === "redis", "Redis span");
    // The long-lived RunBatches call belongs to the job's trace, not to a batch's.
    const batchTrace = receiver.spans().filter((s) => s.traceId === batch.traceId);
    expect(batchTrace.filter((s) => /(RunBatches|ClaimStream|LeaseStream)$/.test(s.name)).map((s) => s.name)).toEqual([]);
    // The job span records its batches and links to them.
    const jobSpan = (await receiver.waitFor((all) => all.some((s) => s.name === "signing.job"), 15_000)).find((s) => s.name === "signing.job")!;
    expect(jobSpan.traceId).toBe(last!.traceId);
    expect(Number(jobSpan.attributes["keymesh.batches"])).toBeGreaterThanOrEqual(1);
    expect(jobSpan.links.map((l) => l.spanId)).toContain(batch.spanId);
  });
});
