/**
 * Fault: every database connection of the mesh is killed on the server (KILL CONNECTION from
 * an admin session) in the middle of a job, twice. Queries and transactions in flight fail
 * and roll back; the pools reconnect; the job completes with every record signed once.
 * Real processes on MariaDB and a dedicated Redis.
 *
 * One thing the checker cannot see here: an acquisition whose grant transaction was rolled
 * back by the kill. While it held the Redis lock of the least recently used key, a concurrent
 * acquisition rightly passed that key by and took the next one; the failed attempt then left
 * no row behind, so the checker reports invariant 4. Such a report is accepted only when the
 * key service's log shows a failed AcquireKeyLease in flight at that moment; every other
 * violation fails the test.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { describe, expect, it } from "vitest";
import { JobState } from "../../gen/keymesh/executor/v1/executor_service_pb.js";
import {
  FAULT_RUN,
  finalState,
  killDatabaseConnections,
  startJobUntilSigned,
  useFaultMesh,
  withDiagnostics,
  within,
  type MeshProcess,
} from "../support/processes.js";

const { records: RECORDS, spec: SPEC } = FAULT_RUN;
/** How long after a failed acquisition ended a concurrent one may still have passed its key by. */
const SLACK_MS = 100;

/** Intervals [start, end] (ms) of the AcquireKeyLease calls that failed, from the key service's log. */
function failedAcquisitions(keys: MeshProcess): { start: number; end: number }[] {
  return keys
    .logs()
    .filter((l) => l.msg === "rpc" && l.method === "AcquireKeyLease" && l.code !== "ok" && l.code !== "resource_exhausted")
    .map((l) => {
      const end = Date.parse(String(l.time));
      return { start: end - Math.ceil(Number(l.durationMs)), end };
    });
}

/** The violations not explained by a failed acquisition in flight (see the file comment). */
function unexplained(violations: string[], failed: { start: number; end: number }[]): string[] {
  return violations.filter((v) => {
    const lru = /^4: key \S+ \(last used \d+\) taken at (\d+) while /.exec(v);
    if (!lru) return true;
    const at = Number(lru[1]);
    return !failed.some((f) => f.start <= at && at <= f.end + SLACK_MS);
  });
}

describe("database connections dropped mid-run", () => {
  const fixture = useFaultMesh();

  it("completes the job after the pools reconnect", async () => {
    const m = fixture.mesh();
    await withDiagnostics(m, async () => {
      const { run, jobId } = await startJobUntilSigned(m, SPEC, RECORDS / 5);

      const first = await killDatabaseConnections(m.database.name);
      await sleep(300);
      const second = await killDatabaseConnections(m.database.name);
      expect(first).toBeGreaterThan(0);
      expect(second).toBeGreaterThan(0);

      const result = await within(run.done, 45_000, "the job to complete after the connections were dropped");
      expect(result.error).toBeUndefined();
      expect(result.last?.state).toBe(JobState.SUCCEEDED);

      // A job this short can end right at the second kill, so these reads can meet pooled
      // connections whose close their process has not seen yet: each such read is rerun on a
      // fresh connection (interceptors/read-retry.ts), and answers.
      const { progress, job, report } = await finalState(m, jobId);
      const left = unexplained(report.violations, failedAcquisitions(m.keysCollection));
      expect(left).toEqual([]);
      if (report.violations.length > 0) {
        console.info(`accepted, each during a failed acquisition: ${report.violations.join("; ")}`);
      }
      expect(progress).toMatchObject({ signed: RECORDS, total: RECORDS });
      expect(report.signatures).toBe(RECORDS);
      expect(job?.state).toBe("succeeded");
    });
  });
});
