/**
 * Failpoints: named places in the code where a fault can be injected for fault-tolerance
 * tests, configured by `KEYMESH_FAILPOINTS` (read once). Unset, every failpoint is a no-op
 * that costs one map lookup.
 *
 *   KEYMESH_FAILPOINTS="executor.batch-sent=kill@3,signing.before-commit=delay:3000@4"
 *
 * `kill` sends SIGKILL to this process, `stop` sends SIGSTOP (a test resumes it with
 * SIGCONT), both once the writes already made have had FLUSH_MS to go out; `delay:<ms>` waits; `@N` fires on the Nth time the point is reached (default 1),
 * once.
 */

import { setTimeout } from "node:timers/promises";

type Action = { kind: "kill" | "stop" } | { kind: "delay"; ms: number };

interface Point {
  action: Action;
  at: number;
  hits: number;
}

function parse(spec: string | undefined): Map<string, Point> {
  const points = new Map<string, Point>();
  for (const entry of (spec ?? "").split(",").map((s) => s.trim()).filter(Boolean)) {
    const m = /^([a-z0-9.-]+)=(kill|stop|delay:(\d+))(?:@(\d+))?$/.exec(entry);
    if (!m) throw new Error(`KEYMESH_FAILPOINTS: cannot parse "${entry}" (expected name=kill|stop|delay:ms[@N])`);
    const action: Action = m[3] ? { kind: "delay", ms: Number(m[3]) } : { kind: m[2] as "kill" | "stop" };
    points.set(m[1]!, { action, at: Number(m[4] ?? 1), hits: 0 });
  }
  return points;
}

let points: Map<string, Point> | undefined;

/** How long kill and stop wait for this process's pending writes to reach the wire. */
const FLUSH_MS = 20;

/** Reaches the failpoint `name`: injects its fault when one is configured for this hit. */
export async function failpoint(name: string): Promise<void> {
  points ??= parse(process.env.KEYMESH_FAILPOINTS);
  const point = points.get(name);
  if (!point || ++point.hits !== point.at) return;
  // What this process already handed to its sockets goes out first, as it would before a
  // real crash or pause a moment later (a write is flushed on a later turn of the loop).
  if (point.action.kind !== "delay") await setTimeout(FLUSH_MS);
  switch (point.action.kind) {
    case "kill":
      process.kill(process.pid, "SIGKILL");
      break;
    case "stop":
      process.kill(process.pid, "SIGSTOP");
      break;
    case "delay":
      await setTimeout(point.action.ms);
      break;
  }
}
