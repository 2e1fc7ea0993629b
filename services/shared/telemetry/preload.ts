/**
 * Telemetry preload. Load it before the application, after the TypeScript
 * loader:
 *
 *   node --import tsx --import ./services/shared/telemetry/preload.ts app.ts
 *
 * Unlike every other module this one acts on import: it starts the
 * OpenTelemetry SDK from the OTEL_* variables (see `sdk.ts`) and arranges for
 * spans to be flushed when the process winds down. It must run before the
 * application's modules are linked, which is why it is an `--import` and not
 * a static import at the top of the entry point: the loader hook it registers
 * only sees modules loaded after it.
 *
 * Exit handling is cooperative. The service host owns SIGTERM: it drains the
 * server and then calls `shutdownTelemetry()` (or `flushTelemetry()`).
 * When no one else listens for a signal, the preload flushes and re-raises
 * the signal so that the default behaviour (terminate) still happens.
 * It never calls `process.exit`.
 */
import { FLUSH_LIMIT_MS, shutdownTelemetry, startTelemetry, telemetryState } from "./sdk.js";

/** The host's drain hooks; also importable from `sdk.ts` without side effects. */
export { flushTelemetry, shutdownTelemetry, telemetryState } from "./sdk.js";

/** Upper bound on how long a lone signal waits for the final export (shutdown bounds itself too). */
const SIGNAL_FLUSH_LIMIT_MS = FLUSH_LIMIT_MS + 500;

await startTelemetry();

if (telemetryState().enabled) {
  // An empty event loop: export what is left. The export schedules more work,
  // so `beforeExit` fires again afterwards; the guard inside
  // shutdownTelemetry keeps that to a single export.
  process.on("beforeExit", () => {
    void shutdownTelemetry();
  });
  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    const onSignal = () => {
      if (process.listenerCount(signal) > 1) {
        // Someone else handles the signal and will call shutdownTelemetry()
        // when done; flushing now would drop the spans of the drain.
        return;
      }
      process.removeListener(signal, onSignal);
      const limit = setTimeout(() => process.kill(process.pid, signal), SIGNAL_FLUSH_LIMIT_MS);
      void shutdownTelemetry().then(() => {
        clearTimeout(limit);
        process.kill(process.pid, signal);
      });
    };
    process.on(signal, onSignal);
  }
}
