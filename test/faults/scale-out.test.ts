/**
 * Three executor processes on one job: the first starts it, two join by job id. The
 * invariants hold, every record is signed exactly once, each executor signs a share, and the
 * job takes less time than the same job run by one executor alone.
 *
 * The comparison is made in this test on two fresh databases with the same records, keys and
 * batch size, concurrency 1 per executor (so that the executors, not the workers inside one,
 * are what scales). Every process first signs a short warm-up job, so that neither side pays
 * for compiling code the other has already compiled. A job's time is its own record of it:
 * GetJob's elapsed_ms, from creation until an executor saw every record signed and marked the
 * job succeeded. Each side runs two jobs, in the order one, three, three, one, and the totals
 * are compared, so that a slow moment of the machine does not decide the outcome.
 * Real processes on MariaDB and a dedicated Redis.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { JobState } from "../../gen/keymesh/executor/v1/executor_service_pb.js";
import { finalState, runJob, startSigningMesh, withDiagnostics, within, type SigningMesh } from "../support/processes.js";
import { startRedisNode, type RedisNode } from "../support/redis-nodes.js";

const RECORDS = 6000;
const ORDER = ["one", "three", "three", "one"] as const;
const WARM_UP = 200;
const KEYS = 12;
const SPEC = { batchSize: 100, concurrency: 1, leaseTtlMs: 5000 };
/**
 * Time allowed to start two meshes (eight processes) and warm them up, and to run the four
 * jobs. Generous because the suite runs other files beside this one on two cores: these are
 * limits on the harness, not on the speed being compared.
 */
const START_BUDGET_MS = 180_000;
const RUN_BUDGET_MS = 240_000;

/** Runs one job with every executor of `mesh` (the first starts it, the others join). */
async function runWithAll(mesh: SigningMesh) {
  const first = runJob(mesh.executor(mesh.executors[0]!), { spec: SPEC });
  const jobId = await within(first.jobId, 15_000, "the job to start");
  const others = mesh.executors.slice(1).map((e) => runJob(mesh.executor(e), { jobId, spec: SPEC }));
  const results = await within(Promise.all([first, ...others].map((r) => r.done)), 120_000, `the job on ${mesh.executors.length} executor(s)`);
  for (const result of results) {
    expect(result.error).toBeUndefined();
    expect(result.last?.state).toBe(JobState.SUCCEEDED);
    expect(result.last?.jobId).toBe(jobId);
  }
  const job = await mesh.executor(mesh.executors[0]!).getJob({ jobId });
  return { jobId, results, jobMs: Number(job.progress?.elapsedMs) };
}

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
    for (const mesh of [single, triple]) {
      await mesh.seed(WARM_UP * mesh.executors.length, KEYS);
      await withDiagnostics(mesh, () => runWithAll(mesh));
    }
  }, START_BUDGET_MS);
  afterAll(async () => {
    await Promise.all([single?.close(), triple?.close()]);
    await redis?.stop();
  });

  it("hold the invariants and finish the job sooner than one executor alone", async () => {
    const meshes = { one: single!, three: triple! };
    const times = { one: [] as number[], three: [] as number[] };
    for (const side of ORDER) {
      const mesh = meshes[side];
      await withDiagnostics(mesh, async () => {
        await mesh.collection.seedRecords({ count: RECORDS, payloadSize: 64 });
        const run = await runWithAll(mesh);
        times[side].push(run.jobMs);
        // Each executor signed a share; together exactly the job's records.
        for (const result of run.results) expect(Number(result.last?.signedByThisExecutor)).toBeGreaterThan(0);
        expect(run.results.reduce((sum, r) => sum + Number(r.last?.signedByThisExecutor), 0)).toBe(RECORDS);
        const { progress, job, report } = await finalState(mesh, run.jobId);
        expect(report.violations.join("\n")).toBe("");
        expect(progress.signed).toBe(progress.total);
        expect(report.signatures).toBe(progress.total);
        expect(job?.state).toBe("succeeded");
      });
    }

    const total = (list: number[]) => list.reduce((a, b) => a + b, 0);
    console.info(
      `${RECORDS} records per job, batch ${SPEC.batchSize}, concurrency 1 per executor: ` +
        `one executor ${times.one.join(" + ")} = ${total(times.one)} ms, ` +
        `three executors ${times.three.join(" + ")} = ${total(times.three)} ms`,
    );
    expect(times.three.every((t) => t > 0)).toBe(true);
    expect(total(times.three)).toBeLessThan(total(times.one));
  }, RUN_BUDGET_MS);
});
