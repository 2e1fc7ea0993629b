import { describe, expect, it } from "vitest";
import { createProgress } from "./progress.js";

function tracker() {
  let clock = 10_000;
  const progress = createProgress({ jobId: "job-1", state: "running", traceId: "", batchSize: 100, now: () => clock });
  return { progress, advance: (ms: number) => (clock += ms) };
}

describe("executor progress", () => {
  it("moves signed_records with every committed batch between reads of the totals", () => {
    const { progress, advance } = tracker();
    progress.totals(1000, 200); // another executor already signed 200
    const seen: number[] = [];
    for (let i = 0; i < 5; i++) {
      advance(100);
      progress.committed(100, 0);
      seen.push(progress.snapshot().signedRecords);
    }
    expect(seen).toEqual([300, 400, 500, 600, 700]);
    // A read that includes our commits and 50 by others replaces the estimate, never double counts.
    progress.totals(1000, 750);
    expect(progress.snapshot().signedRecords).toBe(750);
    progress.committed(100, 0);
    expect(progress.snapshot().signedRecords).toBe(850);
  });

  it("never reports more than the total nor goes backwards on a lagging read", () => {
    const { progress, advance } = tracker();
    progress.totals(150, 0);
    progress.committed(100, 0);
    advance(10);
    expect(progress.snapshot().signedRecords).toBe(100);
    progress.committed(100, 0); // only 50 were left: the estimate is capped at the total
    expect(progress.snapshot().signedRecords).toBe(150);
    progress.totals(150, 100); // a read from before the second commit
    expect(progress.snapshot().signedRecords).toBe(150);
  });

  it("recomputes records_per_second over the last second at every report", () => {
    const { progress, advance } = tracker();
    progress.totals(100_000, 0);
    advance(500);
    progress.committed(500, 0);
    expect(progress.snapshot().recordsPerSecond).toBe(1000); // 500 in the first 500 ms
    advance(500);
    progress.committed(500, 0);
    expect(progress.snapshot().recordsPerSecond).toBe(1000);
    for (let i = 0; i < 4; i++) {
      advance(250);
      progress.committed(1000, 0);
    }
    expect(progress.snapshot().recordsPerSecond).toBe(4000);
    advance(600);
    expect(progress.snapshot().recordsPerSecond).toBe(2000); // two commits left in the window
    advance(2000);
    expect(progress.snapshot().recordsPerSecond).toBe(0);
  });

  it("counts committed, refused and abandoned batches and the keys in use", () => {
    const { progress } = tracker();
    progress.batchStarted();
    progress.batchStarted();
    expect(progress.snapshot()).toMatchObject({ keysBusy: 2, batchesInFlight: 2 });
    progress.committed(100, 0);
    progress.committed(0, 100); // refused whole
    progress.abandoned();
    progress.batchEnded();
    progress.batchEnded();
    expect(progress.snapshot()).toMatchObject({
      keysBusy: 0, batchesInFlight: 0, batchesCommitted: 1, batchesAbandoned: 2, rejectedSignatures: 100, signedByThisExecutor: 100,
    });
  });
});
