import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";

/** The repository's `bin/keymesh.js`. */
export const KEYMESH_BIN = fileURLToPath(new URL("../../bin/keymesh.js", import.meta.url));

/** A `keymesh` child process with its output collected. */
export interface KeymeshProcess {
  readonly child: ChildProcess;
  /** Everything written to stdout and stderr so far. */
  stdout(): string;
  stderr(): string;
  /** Resolves with the first JSON log line that satisfies `match`. */
  waitForLog(match: (line: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  /** Resolves when the process has exited. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Spawns `node bin/keymesh.js <args>` with `env` added to a clean KEYMESH_* environment. */
export function spawnKeymesh(args: string[], env: Record<string, string> = {}): KeymeshProcess {
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("KEYMESH_")));
  const child = spawn(process.execPath, [KEYMESH_BIN, ...args], {
    env: { ...base, KEYMESH_LOG_LEVEL: "info", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  const waiters: Array<() => void> = [];
  child.stdout!.setEncoding("utf8").on("data", (chunk: string) => {
    out += chunk;
    for (const w of waiters.splice(0)) w();
  });
  child.stderr!.setEncoding("utf8").on("data", (chunk: string) => {
    err += chunk;
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("exit", (code, signal) => resolve({ code, signal })),
  );
  const parsed = () =>
    out
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => {
        try {
          return JSON.parse(l) as Record<string, unknown>;
        } catch {
          return {};
        }
      });
  return {
    child,
    stdout: () => out,
    stderr: () => err,
    exited,
    async waitForLog(match, timeoutMs = 20_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const found = parsed().find(match);
        if (found) return found;
        if (child.exitCode !== null) throw new Error(`keymesh exited (${child.exitCode}) before logging the line:\n${out}\n${err}`);
        if (Date.now() > deadline) throw new Error(`timed out waiting for a log line:\n${out}\n${err}`);
        await Promise.race([new Promise<void>((resolve) => waiters.push(resolve)), new Promise((r) => setTimeout(r, 200)), exited]);
      }
    },
  };
}
