import type { JobRow } from "./job-store.js";

/** One progress report of this executor on a job (the RunJob message, before encoding). */
export interface Progress {
  jobId: string;
  state: JobRow["state"];
  totalRecords: number;
  signedRecords: number;
  signedByThisExecutor: number;
  batchesCommitted: number;
  batchesAbandoned: number;
  batchesInFlight: number;
  keysBusy: number;
  rejectedSignatures: number;
  recordsPerSecond: number;
  elapsedMs: number;
  traceId: string;
  batchSize: number;
  error: string;
}

/** The window of `recordsPerSecond`: this executor's rate over the last second. */
export const RATE_WINDOW_MS = 1000;

/**
 * A job's progress as this executor sees it. Counters move with every batch; the job-wide
 * totals come from Collection (two COUNTs, so read only every few seconds) and between reads
 * advance by what this executor committed, so `signedRecords` moves with every committed
 * batch instead of jumping at each read.
 */
export function createProgress(init: { jobId: string; state: JobRow["state"]; traceId: string; batchSize: number; now: () => number }) {
  const { now } = init;
  const started = now();
  const p: Progress = {
    jobId: init.jobId, state: init.state, totalRecords: 0, signedRecords: 0, signedByThisExecutor: 0, batchesCommitted: 0,
    batchesAbandoned: 0, batchesInFlight: 0, keysBusy: 0, rejectedSignatures: 0, recordsPerSecond: 0, elapsedMs: 0,
    traceId: init.traceId, batchSize: init.batchSize, error: "",
  };
  /** Job-wide signed count at the last read, and how much of ours it already included. */
  let readSigned = 0;
  let oursAtRead = 0;
  /** Records stored by this executor's commits, with when; only the last window is kept. */
  const recent: { at: number; stored: number }[] = [];

  function rate(t: number): number {
    while (recent.length > 0 && recent[0]!.at <= t - RATE_WINDOW_MS) recent.shift();
    const window = Math.min(RATE_WINDOW_MS, t - started);
    if (window <= 0) return 0;
    return (recent.reduce((sum, c) => sum + c.stored, 0) * 1000) / window;
  }

  return {
    /** A lease was taken: a batch is in flight on a busy key. */
    batchStarted() {
      p.keysBusy++;
      p.batchesInFlight++;
    },
    /** The batch's key was given back, whatever the outcome. */
    batchEnded() {
      p.keysBusy--;
      p.batchesInFlight--;
    },
    /** A commit came back; a batch counts as committed when it stored anything. */
    committed(stored: number, rejected: number) {
      p.signedByThisExecutor += stored;
      p.rejectedSignatures += rejected;
      if (stored > 0) {
        p.batchesCommitted++;
        recent.push({ at: now(), stored });
      } else {
        p.batchesAbandoned++;
      }
    },
    abandoned() {
      p.batchesAbandoned++;
    },
    /** A fresh read of the job-wide totals (it includes everything this executor committed so far). */
    totals(total: number, signed: number) {
      p.totalRecords = total;
      readSigned = signed;
      oursAtRead = p.signedByThisExecutor;
    },
    finish(state: JobRow["state"], error = "") {
      p.state = state;
      p.error = error;
    },
    /** Counters so far (for the job span's closing attributes). */
    get signedByThisExecutor() {
      return p.signedByThisExecutor;
    },
    get batchesCommitted() {
      return p.batchesCommitted;
    },
    /** The report as of now. */
    snapshot(): Progress {
      const t = now();
      // Never backwards: a read that lags a commit it already counted must not undo it.
      const estimate = readSigned + (p.signedByThisExecutor - oursAtRead);
      p.signedRecords = Math.max(p.signedRecords, Math.min(estimate, Math.max(p.totalRecords, readSigned)));
      p.recordsPerSecond = rate(t);
      p.elapsedMs = t - started;
      return { ...p };
    },
  };
}

/** The progress tracker of one job run. */
export type ProgressTracker = ReturnType<typeof createProgress>;
