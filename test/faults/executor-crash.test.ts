/**
 * Fault: an executor process dies (SIGKILL) with batches in flight, right after handing one to
 * signing. Signing commits nothing for a stream that ended and gives the claims back; the
 * executor's leases are never released, they expire, and a new executor that joins the job
 * picks the records up. The invariants checker must pass and every record must be
 * signed exactly once. Real processes on MariaDB and a dedicated Redis.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { JobState } from "../../gen/keymesh/executor/v1/executor_service_pb.js";
import {
  executorIdPattern,
  finalState,
  runJob,
  startSigningMesh,
  withDiagnostics,
  within,
  type SigningMesh,
} from "../support/processes.js";
import { startRedisNode, type RedisNode } from "../support/redis-nodes.js";

const RECORDS = 2500;
const KEYS = 12;
const SPEC = { batchSize: 100, concurrency: 2, leaseTtlMs: 2000 };

describe("an executor killed between sign and commit", () => {
  let redis: RedisNode;
  let mesh: SigningMesh | undefined;

  beforeAll(async () => {
    redis = await startRedisNode();
    mesh = await startSigningMesh({ redisUrls: [redis.url], failpoints: { 0: "executor.batch-sent=kill@5" } });
    await mesh.seed(RECORDS, KEYS);
  });
  afterAll(async () => {
    await mesh?.close();
    await redis?.stop();
  });

  it("loses nothing: a new executor joins the job, picks up the expired claims and completes it", async () => {
    const m = mesh!;
    await withDiagnostics(m, async () => {
      const first = m.executors[0]!;
      const firstPid = first.pid;
      const run = runJob(m.executor(first), { spec: SPEC });
      const jobId = await within(run.jobId, 15_000, "the job to start");

      // The failpoint SIGKILLs the executor right after it handed its 5th batch to signing.
      const exit = await first.waitForExit(30_000);
      expect(exit.signal).toBe("SIGKILL");
      const ended = await within(run.done, 10_000, "the first executor's stream to break");
      expect(ended.error).toBeDefined();
      const atCrash = await m.progress();
      expect(atCrash.signed).toBeLessThan(RECORDS);

      // It died holding a lease: never released, only expired.
      const orphaned = await m.db.primary("key_leases").where("holder", "like", executorIdPattern(firstPid)).whereNull("released_at");
      expect(orphaned.length).toBeGreaterThanOrEqual(1);

      const second = await m.addExecutor("executor-2");
      const join = runJob(m.executor(second), { jobId, spec: SPEC });
      const result = await within(join.done, 45_000, "the joined run to complete");
      expect(result.error).toBeUndefined();
      expect(result.last?.state).toBe(JobState.SUCCEEDED);
      expect(result.last?.jobId).toBe(jobId);

      const { progress, job, report } = await finalState(m, jobId);
      // Every signature was stored by one of the two executors, each record once.
      const [byFirst] = await m.db.primary("batches").where("executor", "like", executorIdPattern(firstPid)).sum({ n: "stored" });
      expect(Number((byFirst as { n: number | null }).n ?? 0) + Number(result.last?.signedByThisExecutor)).toBe(RECORDS);
      expect(report.violations.join("\n")).toBe("");
      expect(progress).toMatchObject({ signed: RECORDS, total: RECORDS });
      expect(report.signatures).toBe(RECORDS);
      expect(job?.state).toBe("succeeded");
    });
  });
});
