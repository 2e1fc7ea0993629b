import type { JobProgress } from "../gen/keymesh/executor/v1/executor_service_pb.js";

/** Draws a job's progress as it arrives. */
export interface ProgressView {
  /** Shows one progress message. */
  update(p: JobProgress): void;
  /** Ends the display (the cursor is left on a fresh line). */
  end(): void;
}

/** Options of `createProgressView`. */
export interface ProgressViewOptions {
  /** When true, one line is redrawn in place; otherwise lines are printed sparsely. */
  readonly tty: boolean;
  /** Terminal width: a redrawn line longer than this would wrap and stop redrawing in place. */
  readonly columns?: number;
  /** A non-TTY line is printed at least this often while the job moves (default 30 s). */
  readonly quietMs?: number;
  readonly now?: () => number;
}

/** The progress line: bar, percentage, counts, rate, and what the executor is holding. */
export function progressLine(p: JobProgress, width = 30): string {
  const total = Number(p.totalRecords);
  const done = Number(p.signedRecords);
  const frac = total > 0 ? Math.min(1, done / total) : 0;
  const filled = Math.round(frac * width);
  return (
    `[${"#".repeat(filled)}${".".repeat(width - filled)}] ${(frac * 100).toFixed(1).padStart(5)}% ` +
    `${done}/${total}  ${Math.round(p.recordsPerSecond)} rec/s  in flight ${p.batchesInFlight}  keys busy ${p.keysBusy}`
  );
}

/**
 * A TTY gets every message, redrawn in place (carriage return, then erase to the end of the
 * line so a shorter line leaves nothing behind). A log or pipe gets a line when the job
 * crosses another tenth, when `quietMs` passed since the last line, and the last message,
 * so a CI log shows the job moving without thousands of lines.
 */
export function createProgressView(out: NodeJS.WritableStream, opts: ProgressViewOptions): ProgressView {
  const now = opts.now ?? Date.now;
  const quietMs = opts.quietMs ?? 30_000;
  let drawn = false;
  let last: JobProgress | undefined;
  let printed: { decile: number; at: number; signed: bigint } | undefined;

  const decile = (p: JobProgress) => (p.totalRecords > 0n ? Number((p.signedRecords * 10n) / p.totalRecords) : 0);

  return {
    update(p) {
      last = p;
      if (opts.tty) {
        const line = progressLine(p);
        const fitted = opts.columns !== undefined && opts.columns > 1 ? line.slice(0, opts.columns - 1) : line;
        out.write(`\r${fitted}\x1b[K`);
        drawn = true;
        return;
      }
      const moved = printed === undefined || p.signedRecords !== printed.signed;
      if (printed === undefined || decile(p) > printed.decile || (moved && now() - printed.at >= quietMs)) {
        out.write(`${progressLine(p)}\n`);
        printed = { decile: decile(p), at: now(), signed: p.signedRecords };
      }
    },
    end() {
      if (opts.tty) {
        if (drawn) out.write("\n");
        drawn = false;
        return;
      }
      if (last !== undefined && (printed === undefined || last.signedRecords !== printed.signed)) {
        out.write(`${progressLine(last)}\n`);
        printed = { decile: decile(last), at: now(), signed: last.signedRecords };
      }
    },
  };
}
