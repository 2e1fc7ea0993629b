import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { JobState } from "../gen/keymesh/executor/v1/executor_service_pb.js";
import { startInProcessMesh, type InProcessMesh } from "../test/support/mesh.js";
import { verifyAll } from "./verify-all.js";

describe("keymesh sign's verification (SQLite, in process)", () => {
  let mesh: InProcessMesh;
  beforeAll(async () => {
    mesh = await startInProcessMesh("sqlite+memory");
    await mesh.keys.createKeyringKeys({ count: 2 });
  });
  afterAll(async () => {
    await mesh?.close();
  });

  async function runJob(batchSize: number) {
    let last;
    for await (const res of mesh.executor.runJob({ spec: { batchSize, concurrency: 2 }, progressIntervalMs: 100 })) last = res.progress;
    expect(last?.state).toBe(JobState.SUCCEEDED);
    return last!;
  }

  it("answers for the signatures its job stored: not earlier jobs' records, not records seeded after it", async () => {
    await mesh.collection.seedRecords({ count: 300 });
    const first = await runJob(100);
    await mesh.collection.seedRecords({ count: 200 });
    const second = await runJob(70);
    // Another command seeds more while this one verifies.
    await mesh.collection.seedRecords({ count: 50 });
    const clients = { collection: mesh.collection, keys: mesh.keys };

    expect(await verifyAll(clients, undefined, undefined, first.jobId)).toMatchObject({ records: 300, signed: 300, valid: 300, invalid: 0, unsigned: 0 });
    const seen: number[] = [];
    expect(await verifyAll(clients, (n) => seen.push(n), undefined, second.jobId)).toMatchObject({ records: 200, valid: 200, invalid: 0, unsigned: 0 });
    expect(seen.at(-1)).toBe(200);
    // The second job's records, each once: batch by batch, each batch in id order.
    const ids: bigint[] = [];
    for await (const chunk of mesh.collection.exportSignatures({ jobId: second.jobId })) ids.push(...chunk.records.map((r) => r.record!.id));
    expect(new Set(ids).size).toBe(200);
    expect([...ids].sort((a, b) => Number(a - b))).toEqual(Array.from({ length: 200 }, (_, i) => BigInt(301 + i)));
    // A job that stored nothing has nothing to verify; `keymesh verify` still looks at every record.
    expect(await verifyAll(clients, undefined, undefined, "job-unknown")).toMatchObject({ records: 0, valid: 0 });
    expect(await verifyAll(clients)).toMatchObject({ records: 550, valid: 500, invalid: 0, unsigned: 50 });
  });

  it("refuses a job's records from an id onwards: they do not come in id order", async () => {
    const err = await (async () => {
      for await (const _ of mesh.collection.exportSignatures({ jobId: "job-1", afterId: 5n }));
    })().catch((e: unknown) => ConnectError.from(e));
    expect(err?.code).toBe(Code.InvalidArgument);
    expect(err?.rawMessage).toMatch(/after_id must be 0 with job_id/);
  });
});
