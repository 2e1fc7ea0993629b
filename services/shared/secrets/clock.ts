/** Time as the secrets client sees it; tests pass a fake one. */
export interface Clock {
  now(): number;
  /** Runs `fn` after `ms`; the returned function cancels it. Timers must not keep the process alive. */
  setTimeout(fn: () => void, ms: number): () => void;
}

/** The real clock. */
export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout(fn, ms) {
    const t = setTimeout(fn, ms);
    t.unref();
    return () => clearTimeout(t);
  },
};
