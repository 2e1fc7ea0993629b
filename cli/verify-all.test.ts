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

  it("answers for the records its job covered, not for records seeded after the job ended", async () => {
    await mesh.collection.seedRecords({ count: 300 });
    let last;
    for await (const res of mesh.executor.runJob({ spec: { batchSize: 100, concurrency: 2 }, progressIntervalMs: 100 })) last = res.progress;
    expect(last?.state).toBe(JobState.SUCCEEDED);
    // Another command seeds more while this one verifies.
    await mesh.collection.seedRecords({ count: 200 });
    const clients = { collection: mesh.collection, keys: mesh.keys };
    const job = await verifyAll(clients, undefined, undefined, Number(last!.totalRecords));
    expect(job).toMatchObject({ records: 300, signed: 300, valid: 300, invalid: 0, unsigned: 0 });
    // `keymesh verify` still looks at every record.
    expect(await verifyAll(clients)).toMatchObject({ records: 500, valid: 300, invalid: 0, unsigned: 200 });
  });
});
