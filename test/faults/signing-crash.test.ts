/**
 * Fault: the signing service is killed (SIGKILL) in the middle of a job, with batches on the
 * executor's shared SignStream, and restarted on the same port a second later. Batches that
 * were in flight fail and are abandoned (claims and leases given back); the executor opens a
 * new stream once signing is back and the job completes. Real processes on MariaDB and a
 * dedicated Redis.
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

describe("the signing service killed mid-stream", () => {
  const fixture = useFaultMesh();

  it("completes the job after signing restarts on the same port", async () => {
    const m = fixture.mesh();
    await withDiagnostics(m, async () => {
      const { run, jobId } = await startJobUntilSigned(m, SPEC, RECORDS / 5);

      const exit = await m.signing.kill();
      expect(exit.signal).toBe("SIGKILL");
      // Down for a while: the executor keeps trying and abandons what it cannot sign.
      await sleep(1000);
      await m.signing.start();
      expect(m.signing.starts).toBe(2);

      const result = await within(run.done, 45_000, "the job to complete after signing restarted");
      expect(result.error).toBeUndefined();
      expect(result.last?.state).toBe(JobState.SUCCEEDED);
      expect(result.last?.batchesAbandoned).toBeGreaterThan(0);

      const { progress, job, report } = await finalState(m, jobId);
      expect(report.violations.join("\n")).toBe("");
      expect(progress).toMatchObject({ signed: RECORDS, total: RECORDS });
      expect(report.signatures).toBe(RECORDS);
      expect(job?.state).toBe("succeeded");
    });
  });
});
