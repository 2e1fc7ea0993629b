import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import type { Interceptor } from "@connectrpc/connect";
import { freePort } from "../test/support/redis-nodes.js";

export { freePort };

const BIN = fileURLToPath(new URL("../bin/keymesh.js", import.meta.url));

/** A keymesh process started for a benchmark. */
export interface MeshProcess {
  readonly url: string;
  readonly pid: number;
  readonly child: ChildProcess;
  /** Peak (since start or the last `resetPeakMemory`) and current resident set size in MiB (from /proc). */
  memory(): { peakMiB: number; rssMiB: number };
  /** Starts the peak of `memory()` afresh, so that it covers what follows alone (e.g. one job). */
  resetPeakMemory(): void;
  /** CPU time (user + system) used so far, in milliseconds. */
  cpuMs(): number;
  /** The last 20,000 characters the process wrote (stdout and stderr), and its exit code once it has exited. */
  output(): { text: string; exitCode: number | null; signal: NodeJS.Signals | null };
  stop(): Promise<void>;
}

/** Runs `keymesh <args>` to completion (e.g. migrate), failing loudly on a non-zero exit. */
export async function runKeymesh(args: string[], env: NodeJS.ProcessEnv): Promise<void> {
  const child = spawn(process.execPath, [BIN, ...args], { env, stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
  const code = await new Promise<number | null>((resolve) => child.on("exit", resolve));
  if (code !== 0) throw new Error(`keymesh ${args.join(" ")} exited ${code}: ${stderr.slice(-2000)}`);
}

/** Starts `keymesh serve <services>` (none: every service) on a port and resolves once it is serving. */
export async function startServe(services: string[], port: number, env: NodeJS.ProcessEnv, nodeArgs: string[] = []): Promise<MeshProcess> {
  const what = `serve ${services.length > 0 ? services.join(" ") : "(every service)"}`;
  const child = spawn(process.execPath, [...nodeArgs, BIN, "serve", ...services, "--port", String(port), "--no-migrate", "--dev"], {
    env: { ...env, KEYMESH_LOG_LEVEL: env.KEYMESH_LOG_LEVEL ?? "warn" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  const collect = (d: Buffer) => {
    output = (output + d.toString()).slice(-20_000);
  };
  child.stdout!.on("data", collect);
  child.stderr!.on("data", collect);
  const url = `http://127.0.0.1:${port}`;
  // Generous: on a shared, busy machine a start with the telemetry SDKs can take a while.
  const deadline = Date.now() + 120_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${what} exited ${child.exitCode}: ${output}`);
    if (await listening(port)) break;
    if (Date.now() > deadline) throw new Error(`${what} did not start: ${output}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    url,
    pid: child.pid!,
    child,
    memory() {
      const status = readFileSync(`/proc/${child.pid}/status`, "utf8");
      const kib = (field: string) => Number(new RegExp(`${field}:\\s+(\\d+)`).exec(status)?.[1] ?? 0);
      return { peakMiB: Math.round(kib("VmHWM") / 1024), rssMiB: Math.round(kib("VmRSS") / 1024) };
    },
    resetPeakMemory() {
      // Linux: writing 5 to clear_refs resets the peak RSS (VmHWM) to the current RSS.
      writeFileSync(`/proc/${child.pid}/clear_refs`, "5");
    },
    cpuMs: () => cpuMsOf(child.pid!),
    output: () => ({ text: output, exitCode: child.exitCode, signal: child.signalCode }),
    async stop() {
      if (child.exitCode !== null) return;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await new Promise((r) => child.once("exit", r));
      clearTimeout(timer);
    },
  };
}

async function listening(port: number): Promise<boolean> {
  const { connect } = await import("node:net");
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

/** CPU time (user + system) of a process so far, in milliseconds, from /proc/<pid>/stat. */
export function cpuMsOf(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

/** Sends `token` as the bearer credential of every call (the benches drive the mesh as root). */
export function bearer(token: string): Interceptor {
  return (next) => (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
}
