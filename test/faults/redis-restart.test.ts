/**
 * Fault: the Redis server holding the lease locks dies in the middle of a job and comes back
 * empty a second later. While it is down no lease can be taken or renewed (batches in flight
 * are abandoned); after it is back, locks are taken afresh and the database fences still
 * decide. The job completes. Real processes on MariaDB and a dedicated redis-server.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { describe, expect, it } from "vitest";
import { JobState } from "../../gen/keymesh/executor/v1/executor_service_pb.js";
import {
  FAULT_RUN,
  finalState,
  startJobUntilSigned,
  useFaultMesh,
  withDiagnostics,
  within,
} from "../support/processes.js";

const { records: RECORDS, spec: SPEC } = FAULT_RUN;

describe("Redis restarted mid-run", () => {
  const fixture = useFaultMesh();

  it("completes the job once Redis is back", async () => {
    const m = fixture.mesh();
    const redis = fixture.redis()[0]!;
    await withDiagnostics(m, async () => {
      const { run, jobId } = await startJobUntilSigned(m, SPEC, RECORDS / 5);

      await redis.kill();
      await sleep(1000);
      await redis.restart();
      expect(redis.running).toBe(true);

      const result = await within(run.done, 45_000, "the job to complete after Redis restarted");
      expect(result.error).toBeUndefined();
      expect(result.last?.state).toBe(JobState.SUCCEEDED);
      // The key service saw Redis go away.
      expect(m.keysCollection.logs().some((l) => l.msg === "redis connection error")).toBe(true);

      const { progress, job, report } = await finalState(m, jobId);
      expect(report.violations.join("\n")).toBe("");
      expect(progress).toMatchObject({ signed: RECORDS, total: RECORDS });
      expect(report.signatures).toBe(RECORDS);
      expect(job?.state).toBe("succeeded");
    });
  });
});
