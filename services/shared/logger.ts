import pino, { type DestinationStream, type Logger } from "pino";
import type { LogLevel } from "./config.js";

export type { Logger } from "pino";

/** Options for `createLogger`. */
export interface LoggerOptions {
  /** Minimum level written (default info). */
  readonly level?: LogLevel;
  /** Where lines go (default: standard output, written synchronously so nothing is lost at exit). */
  readonly destination?: DestinationStream;
  /** Fields added to every line. */
  readonly base?: Record<string, unknown>;
}

/**
 * Creates the process logger: one JSON object per line (pino), ISO timestamps, level names
 * instead of numbers. Never log message contents, secrets or tokens through it.
 */
export function createLogger(opts: LoggerOptions = {}): Logger {
  return pino(
    {
      level: opts.level ?? "info",
      base: { pid: process.pid, ...opts.base },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      redact: { paths: ["authorization", "*.authorization", "token", "*.token", "password", "*.password"], censor: "***" },
    },
    opts.destination ?? pino.destination({ dest: 1, sync: true }),
  );
}
