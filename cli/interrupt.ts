import { constants } from "node:os";

/** Ctrl-C (or SIGTERM) turned into an abort signal, so a command can say where it stopped. */
export interface Interrupt {
  /** Aborted by the first SIGINT or SIGTERM. */
  readonly signal: AbortSignal;
  /** The conventional exit status for the signal received: 128 + its number (130 for SIGINT). */
  exitCode(): number;
  /** Stops listening; Node's default handling (exit at once) applies again. */
  dispose(): void;
}

/**
 * Listens for SIGINT and SIGTERM while a command runs. The first aborts `signal` and lets the
 * command wind down (cancel its calls, print how to resume); a second one exits at once with
 * `onForce`'s last words, for a command that is stuck winding down.
 */
export function listenForInterrupt(onForce: (signal: NodeJS.Signals) => void = () => undefined): Interrupt {
  const controller = new AbortController();
  let received: NodeJS.Signals | undefined;
  const onSignal = (signal: NodeJS.Signals) => {
    if (received === undefined) {
      received = signal;
      controller.abort(new Error(`interrupted by ${signal}`));
      return;
    }
    onForce(signal);
    process.exit(128 + constants.signals[signal]);
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  return {
    signal: controller.signal,
    exitCode: () => 128 + constants.signals[received ?? "SIGINT"],
    dispose() {
      process.off("SIGINT", onSignal);
      process.off("SIGTERM", onSignal);
    },
  };
}
