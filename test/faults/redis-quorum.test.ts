/**
 * Fault: one of three Redis nodes of the lease quorum is stopped in the middle of a job and
 * stays down. Redlock still reaches a majority (2 of 3), so leases keep being granted and
 * renewed and the job completes. Real processes on MariaDB and three redis-server nodes.
 */
import { describe, expect, it } from "vitest";
import { JobState } from "../../gen/keymesh/executor/v1/executor_service_pb.js";
import {
  FAULT_RUN,
  finalState,
  startJobUntilSigned,
  until,
  useFaultMesh,
  withDiagnostics,
  within,
} from "../support/processes.js";

const { records: RECORDS, spec: SPEC } = FAULT_RUN;

describe("one of three Redis nodes stopped mid-run", () => {
  const fixture = useFaultMesh(3);

  it("completes the job on the remaining quorum", async () => {
    const m = fixture.mesh();
    const nodes = fixture.redis();
    await withDiagnostics(m, async () => {
      const { run, jobId } = await startJobUntilSigned(m, SPEC, RECORDS / 5);

      const down = nodes[1]!;
      await down.stop();
      expect(down.running).toBe(false);

      const result = await within(run.done, 45_000, "the job to complete with one Redis node down");
      expect(result.error).toBeUndefined();
      expect(result.last?.state).toBe(JobState.SUCCEEDED);
      // The key service noticed the node going away (its client reports the refused reconnect,
      // which can come after a short job has already ended), and worked on without it.
      await until(
        () => m.keysCollection.logs().some((l) => l.msg === "redis connection error" && l.url === down.url),
        10_000,
        "the key service to report the stopped Redis node",
      );
      expect(down.running).toBe(false);

      const { progress, job, report } = await finalState(m, jobId);
      expect(report.violations.join("\n")).toBe("");
      expect(progress).toMatchObject({ signed: RECORDS, total: RECORDS });
      expect(report.signatures).toBe(RECORDS);
      expect(job?.state).toBe("succeeded");
      // Leases kept being granted after the node went down.
      expect(report.leases).toBeGreaterThan(RECORDS / SPEC.batchSize - 1);
    });
  });
});
