import { Writable } from "node:stream";
import { createLogger, type Logger } from "../../services/shared/logger.js";

/** A real keymesh logger whose lines are kept, parsed, in `lines` (for asserting on what was logged). */
export function capturingLogger(level: "debug" | "info" = "debug"): { logger: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString("utf8").split("\n").filter(Boolean)) lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  return { logger: createLogger({ level, destination }), lines };
}
