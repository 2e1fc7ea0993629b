/**
 * Fault: every database connection of the mesh is killed on the server (KILL CONNECTION from
 * an admin session) in the middle of a job, twice. Queries and transactions in flight fail
 * and roll back; the pools reconnect; the job completes with every record signed once.
 * Real processes on MariaDB and a dedicated Redis.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { JobState } from "../../gen/keymesh/executor/v1/executor_service_pb.js";
import {
  finalState,
  killDatabaseConnections,
  runJob,
  startSigningMesh,
  until,
  withDiagnostics,
  within,
  type SigningMesh,
} from "../support/processes.js";
import { startRedisNode, type RedisNode } from "../support/redis-nodes.js";

const RECORDS = 2500;
const KEYS = 12;
const SPEC = { batchSize: 100, concurrency: 3, leaseTtlMs: 2000 };

describe("database connections dropped mid-run", () => {
  let redis: RedisNode;
  let mesh: SigningMesh | undefined;

  beforeAll(async () => {
    redis = await startRedisNode();
    mesh = await startSigningMesh({ redisUrls: [redis.url] });
    await mesh.seed(RECORDS, KEYS);
  });
  afterAll(async () => {
    await mesh?.close();
    await redis?.stop();
  });

  it("completes the job after the pools reconnect", async () => {
    const m = mesh!;
    await withDiagnostics(m, async () => {
      const run = runJob(m.executor(m.executors[0]!), { spec: SPEC });
      const jobId = await within(run.jobId, 15_000, "the job to start");
      await until(async () => (await m.progress()).signed >= RECORDS / 5, 30_000, "a fifth of the records signed", 20);

      const first = await killDatabaseConnections(m.database.name);
      await sleep(300);
      const second = await killDatabaseConnections(m.database.name);
      expect(first).toBeGreaterThan(0);
      expect(second).toBeGreaterThan(0);
      expect((await m.progress()).signed).toBeLessThan(RECORDS);

      const result = await within(run.done, 45_000, "the job to complete after the connections were dropped");
      expect(result.error).toBeUndefined();
      expect(result.last?.state).toBe(JobState.SUCCEEDED);

      const { progress, job, report } = await finalState(m, jobId);
      expect(report.violations).toEqual([]);
      expect(progress).toMatchObject({ signed: RECORDS, total: RECORDS });
      expect(report.signatures).toBe(RECORDS);
      expect(job?.state).toBe("succeeded");
    });
  });
});
