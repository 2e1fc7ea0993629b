/**
 * Fault: an executor is frozen (SIGSTOP) right after handing a batch to signing, for longer
 * than the lease TTL, while a second executor carries the job to the end; the commit of one
 * of its batches is held back in signing meanwhile (a paused holder's commit arriving late).
 * The frozen executor renews nothing, so the lease token the commit carries has lapsed when
 * it arrives: the collection must reject it (a batch recorded with outcome "rejected" for
 * that executor), the executor learns it once resumed (SIGCONT), and nothing is signed twice. Real processes on MariaDB and a dedicated Redis.
 */
import { setTimeout as sleep } from "node:timers/promises";
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

describe("an executor paused past its lease", () => {
  let redis: RedisNode;
  let mesh: SigningMesh | undefined;

  beforeAll(async () => {
    redis = await startRedisNode();
    // The executor stops right after handing its 4th batch to signing, and the 4th commit
    // signing sends (one of that executor's batches: the other executor joins later) waits
    // 1.5 lease TTLs, past the lease (the frozen holder renews nothing) and before the
    // executor is resumed (2 TTLs at least).
    mesh = await startSigningMesh({
      redisUrls: [redis.url],
      executors: 2,
      failpoints: { 0: "executor.batch-sent=stop@4" },
      envFor: (name): Record<string, string> => (name === "signing" ? { KEYMESH_FAILPOINTS: `signing.before-commit=delay:${1.5 * SPEC.leaseTtlMs}@4` } : {}),
    });
    await mesh.seed(RECORDS, KEYS);
  });
  afterAll(async () => {
    await mesh?.close();
    await redis?.stop();
  });

  it("has its stale commit rejected by the fence after SIGCONT, while the job completes elsewhere", async () => {
    const m = mesh!;
    await withDiagnostics(m, async () => {
      const [paused, other] = [m.executors[0]!, m.executors[1]!];
      const run = runJob(m.executor(paused), { spec: SPEC });
      const jobId = await within(run.jobId, 15_000, "the job to start");

      // The failpoint SIGSTOPs the executor right after it handed its 4th batch to signing.
      await paused.waitUntilStopped(30_000);
      const stoppedAt = Date.now();
      expect((await m.progress()).signed).toBeLessThan(RECORDS);

      const join = runJob(m.executor(other), { jobId, spec: SPEC });
      const result = await within(join.done, 45_000, "the second executor to complete the job");
      expect(result.error).toBeUndefined();
      expect(result.last?.state).toBe(JobState.SUCCEEDED);
      expect((await m.progress()).signed).toBe(RECORDS);

      // Frozen for well over the lease TTL, then resumed: the answer to its delayed commit waits for it.
      const frozenMs = Date.now() - stoppedAt;
      if (frozenMs < 2 * SPEC.leaseTtlMs) await sleep(2 * SPEC.leaseTtlMs - frozenMs);
      expect(paused.isStopped()).toBe(true);
      paused.cont();
      const resumed = await within(run.done, 20_000, "the resumed executor's stream to end");
      expect(resumed.error).toBeUndefined();
      expect(resumed.last?.rejectedSignatures).toBeGreaterThan(0);

      const rejected = (await m.db
        .primary("batches")
        .where("executor", "like", executorIdPattern(paused.pid))
        .andWhere("outcome", "rejected")) as { stored: number; rejected: number; fence: number; key_id: string; committed_at: number }[];
      expect(rejected.length).toBeGreaterThanOrEqual(1);
      for (const b of rejected) {
        expect(b.stored).toBe(0);
        expect(b.rejected).toBeGreaterThan(0);
        // Its fence was stale when the commit arrived: the key had been leased again since, or
        // its own lease had lapsed.
        const leases = (await m.db.primary("key_leases").where({ key_id: b.key_id })) as { fence: number; acquired_at: number; expires_at: number }[];
        const own = leases.find((l) => Number(l.fence) === Number(b.fence));
        const later = leases.some((l) => Number(l.fence) > Number(b.fence) && Number(l.acquired_at) <= Number(b.committed_at));
        expect(own).toBeDefined();
        expect(later || Number(own!.expires_at) < Number(b.committed_at)).toBe(true);
      }
      const { progress, job, report } = await finalState(m, jobId);
      expect(report.violations.join("\n")).toBe("");
      expect(progress).toMatchObject({ signed: RECORDS, total: RECORDS });
      expect(report.signatures).toBe(RECORDS);
      expect(job?.state).toBe("succeeded");
    });
  });
});
