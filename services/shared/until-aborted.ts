/**
 * `promise`, or a rejection as soon as `signal` aborts (at once if it has), with `reason()`
 * (default: the signal's reason). Either way `promise` is settled into the result, so its own
 * later rejection is handled: a caller that stops waiting never leaves it unhandled. The abort
 * listener is removed when `promise` settles, so a finished wait leaves nothing on a shared
 * signal.
 */
export function untilAborted<T>(promise: Promise<T>, signal: AbortSignal, reason: () => unknown = () => signal.reason): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(reason());
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener("abort", onAbort);
        resolve(value);
      },
      (err: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(err);
      },
    );
  });
}
