/**
 * Fault: one of three Redis nodes of the lease quorum is stopped in the middle of a job and
 * stays down. Redlock still reaches a majority (2 of 3), so leases keep being granted and
 * renewed and the job completes. Real processes on MariaDB and three redis-server nodes.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { JobState } from "../../gen/keymesh/executor/v1/executor_service_pb.js";
import {
  finalState,
  startJobUntilSigned,
  startSigningMesh,
  withDiagnostics,
  within,
  type SigningMesh,
} from "../support/processes.js";
import { startRedisNode, type RedisNode } from "../support/redis-nodes.js";

const RECORDS = 2500;
const KEYS = 12;
const SPEC = { batchSize: 100, concurrency: 3, leaseTtlMs: 2000 };

describe("one of three Redis nodes stopped mid-run", () => {
  let nodes: RedisNode[] = [];
  let mesh: SigningMesh | undefined;

  beforeAll(async () => {
    nodes = await Promise.all([startRedisNode(), startRedisNode(), startRedisNode()]);
    mesh = await startSigningMesh({ redisUrls: nodes.map((n) => n.url) });
    await mesh.seed(RECORDS, KEYS);
  });
  afterAll(async () => {
    await mesh?.close();
    await Promise.all(nodes.map((n) => n.stop()));
  });

  it("completes the job on the remaining quorum", async () => {
    const m = mesh!;
    await withDiagnostics(m, async () => {
      const { run, jobId } = await startJobUntilSigned(m, SPEC, RECORDS / 5);

      const down = nodes[1]!;
      await down.stop();
      expect(down.running).toBe(false);

      const result = await within(run.done, 45_000, "the job to complete with one Redis node down");
      expect(result.error).toBeUndefined();
      expect(result.last?.state).toBe(JobState.SUCCEEDED);
      // The key service noticed the node going away, and worked on without it.
      expect(m.keysCollection.logs().some((l) => l.msg === "redis connection error" && l.url === down.url)).toBe(true);
      expect(down.running).toBe(false);

      const { progress, job, report } = await finalState(m, jobId);
      expect(report.violations).toEqual([]);
      expect(progress).toMatchObject({ signed: RECORDS, total: RECORDS });
      expect(report.signatures).toBe(RECORDS);
      expect(job?.state).toBe("succeeded");
      // Leases kept being granted after the node went down.
      expect(report.leases).toBeGreaterThan(RECORDS / SPEC.batchSize - 1);
    });
  });
});
