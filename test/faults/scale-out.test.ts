/**
 * Three executor processes on one job: the first starts it, two join by job id. The
 * invariants hold, every record is signed exactly once, each executor signs a share, and the
 * job takes less time than the same job run by one executor alone (measured in the same test,
 * on a fresh database with the same records, keys and batch size; concurrency 1 per executor
 * so that the executors, not the workers inside one, are what scales). Real processes on
 * MariaDB and a dedicated Redis.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { JobState } from "../../gen/keymesh/executor/v1/executor_service_pb.js";
import { finalState, runJob, startSigningMesh, withDiagnostics, within, type SigningMesh } from "../support/processes.js";
import { startRedisNode, type RedisNode } from "../support/redis-nodes.js";

const RECORDS = 3000;
const KEYS = 12;
const SPEC = { batchSize: 100, concurrency: 1, leaseTtlMs: 5000 };

describe("three executors on one job", () => {
  let redis: RedisNode;
  let single: SigningMesh | undefined;
  let triple: SigningMesh | undefined;

  beforeAll(async () => {
    redis = await startRedisNode();
    [single, triple] = await Promise.all([
      startSigningMesh({ redisUrls: [redis.url], executors: 1 }),
      startSigningMesh({ redisUrls: [redis.url], executors: 3 }),
    ]);
    await Promise.all([single.seed(RECORDS, KEYS), triple.seed(RECORDS, KEYS)]);
  });
  afterAll(async () => {
    await Promise.all([single?.close(), triple?.close()]);
    await redis?.stop();
  });

  it("hold the invariants and finish sooner than one executor alone", async () => {
    // One executor alone.
    const alone = await withDiagnostics(single!, async () => {
      const started = performance.now();
      const result = await within(runJob(single!.executor(single!.executors[0]!), { spec: SPEC }).done, 50_000, "the single executor's job");
      const elapsed = performance.now() - started;
      expect(result.error).toBeUndefined();
      expect(result.last?.state).toBe(JobState.SUCCEEDED);
      const { progress, report } = await finalState(single!, result.last!.jobId);
      expect(report.violations).toEqual([]);
      expect(progress).toMatchObject({ signed: RECORDS, total: RECORDS });
      return elapsed;
    });

    // Three executors: the first starts the job, the others join it.
    const together = await withDiagnostics(triple!, async () => {
      const m = triple!;
      const started = performance.now();
      const first = runJob(m.executor(m.executors[0]!), { spec: SPEC });
      const jobId = await within(first.jobId, 15_000, "the job to start");
      const others = m.executors.slice(1).map((e) => runJob(m.executor(e), { jobId, spec: SPEC }));
      const results = await within(Promise.all([first, ...others].map((r) => r.done)), 50_000, "the three executors' job");
      const elapsed = performance.now() - started;
      for (const result of results) {
        expect(result.error).toBeUndefined();
        expect(result.last?.state).toBe(JobState.SUCCEEDED);
        expect(result.last?.jobId).toBe(jobId);
        // Each executor did a share of the work.
        expect(Number(result.last?.signedByThisExecutor)).toBeGreaterThan(0);
      }
      expect(results.reduce((sum, r) => sum + Number(r.last?.signedByThisExecutor), 0)).toBe(RECORDS);

      const { progress, job, report } = await finalState(m, jobId);
      expect(report.violations).toEqual([]);
      expect(progress).toMatchObject({ signed: RECORDS, total: RECORDS });
      expect(report.signatures).toBe(RECORDS);
      expect(job?.state).toBe("succeeded");
      return elapsed;
    });

    console.info(`${RECORDS} records, batch ${SPEC.batchSize}: one executor ${Math.round(alone)} ms, three executors ${Math.round(together)} ms`);
    expect(together).toBeLessThan(alone);
  });
});
