import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { JobState } from "../gen/keymesh/executor/v1/executor_service_pb.js";
import { WATCH_MIN_INTERVAL_MS } from "../services/executor/handler.js";
import { JOB_STALE_MS } from "../services/executor/job-store.js";
import { checkInvariants } from "./support/invariants.js";
import { startInProcessMesh, type InProcessMesh } from "./support/mesh.js";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe("job lifecycle (SQLite, in process)", () => {
  let mesh: InProcessMesh;
  beforeAll(async () => {
    mesh = await startInProcessMesh("sqlite+memory");
    await mesh.keys.createKeyringKeys({ count: 4 });
  });
  afterAll(async () => {
    await mesh?.close();
  });

  it("pushes WatchJob progress from commits, never faster than its floor", async () => {
    await mesh.collection.seedRecords({ count: 4000 });
    const run = mesh.executor.runJob({ spec: { batchSize: 100, concurrency: 2, leaseTtlMs: 5000 }, progressIntervalMs: 100 })[Symbol.asyncIterator]();
    const first = (await run.next()).value!.progress!;
    const rest = (async () => {
      for (let r = await run.next(); !r.done; r = await run.next()) void r;
    })();
    const started = Date.now();
    const seen: bigint[] = [];
    let last;
    for await (const res of mesh.executor.watchJob({ jobId: first.jobId, intervalMs: 1 })) {
      seen.push(res.progress!.signedRecords);
      last = res.progress;
    }
    const elapsed = Date.now() - started;
    await rest;
    expect(last?.state).toBe(JobState.SUCCEEDED);
    // At most one message per floor interval (plus the first and the last).
    expect(seen.length).toBeLessThanOrEqual(Math.ceil(elapsed / WATCH_MIN_INTERVAL_MS) + 2);
    // Every message after the first followed a commit: the counts only grow.
    for (let i = 1; i < seen.length; i++) expect(seen[i]! >= seen[i - 1]!).toBe(true);
  });

  it("makes a job whose executors are gone interrupted, ends WatchJob on it, and resumes it with its id", async () => {
    await mesh.collection.seedRecords({ count: 3000 });
    // What a crashed executor leaves behind: a running job whose heartbeat stopped.
    const jobId = "job-crashed-1";
    const at = Date.now();
    await mesh.db.primary("jobs").insert({ id: jobId, batch_size: 100, concurrency: 2, lease_ttl_ms: 2000, state: "running", created_at: at, heartbeat_at: at });
    expect((await mesh.executor.getJob({ jobId })).progress?.state).toBe(JobState.RUNNING);
    // Nobody works on it: once the heartbeat is stale it reads interrupted, not running for ever.
    await sleep(JOB_STALE_MS + 500);
    const job = await mesh.executor.getJob({ jobId });
    expect(job.progress?.state).toBe(JobState.INTERRUPTED);
    const watched = [];
    for await (const res of mesh.executor.watchJob({ jobId, intervalMs: 100 })) watched.push(res.progress!.state);
    expect(watched).toEqual([JobState.INTERRUPTED]);
    // `keymesh sign --job ID` resumes it to the end.
    let last;
    for await (const res of mesh.executor.runJob({ jobId, spec: {}, progressIntervalMs: 100 })) last = res.progress;
    expect(last?.state).toBe(JobState.SUCCEEDED);
    expect((await mesh.executor.getJob({ jobId })).progress?.state).toBe(JobState.SUCCEEDED);
    const report = await checkInvariants(mesh.db.primary, {});
    expect(report.violations.join("\n")).toBe("");
  });
});
