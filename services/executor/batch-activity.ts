/**
 * The batches one job's workers have in flight in this process, so that a worker which found
 * nothing to claim waits for them instead of a fixed pause. At a job's end every record is
 * claimed while the last batches are still signing: the idle workers only need to look at the
 * totals again once those batches have ended, and a fixed pause (200 ms, longer than most jobs'
 * last batch) made every job end that much after its last commit.
 */
export interface BatchActivity {
  /** Batches of the job in flight in this process. */
  readonly inFlight: number;
  /** Batches of the job that claimed records and have ended here so far, whatever their outcome. */
  readonly ended: number;
  /**
   * Marks a batch begun; the returned function marks it ended (once, however often called).
   * `worked`: whether it claimed records (false for an attempt that found none or no key):
   * only such a batch counts in `ended`. Idle workers' own empty attempts end all the time,
   * and waking each other on them would turn their wait into a busy loop.
   */
  begin(): (worked: boolean) => void;
  /**
   * Resolves after `ms`, when `signal` aborts, or as soon as no batch is in flight and one has
   * ended since the caller saw `ended` equal `seen` (at once if that is already so). Never
   * rejects. Batches elsewhere (another executor's) are not seen here: `ms` bounds the wait.
   */
  quiet(seen: number, ms: number, signal: AbortSignal): Promise<void>;
}

export function createBatchActivity(): BatchActivity {
  let inFlight = 0;
  let ended = 0;
  const waiters = new Set<() => void>();
  return {
    get inFlight() {
      return inFlight;
    },
    get ended() {
      return ended;
    },
    begin() {
      inFlight++;
      let done = false;
      return (worked) => {
        if (done) return;
        done = true;
        inFlight--;
        if (worked) ended++;
        if (inFlight === 0) for (const wake of [...waiters]) wake();
      };
    },
    quiet(seen, ms, signal) {
      const settled = () => inFlight === 0 && ended > seen;
      if (signal.aborted || settled()) return Promise.resolve();
      return new Promise<void>((resolve) => {
        const stop = () => {
          clearTimeout(timer);
          waiters.delete(check);
          signal.removeEventListener("abort", stop);
          resolve();
        };
        // Told whenever nothing is in flight; only a batch that worked since `seen` ends the wait.
        const check = () => {
          if (settled()) stop();
        };
        const timer = setTimeout(stop, ms);
        waiters.add(check);
        signal.addEventListener("abort", stop, { once: true });
      });
    },
  };
}
