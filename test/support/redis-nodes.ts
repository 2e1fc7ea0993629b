import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

/**
 * Extra Redis nodes for tests (e.g. a three-node Redlock quorum): `redis-server` children on
 * free loopback ports, without persistence, that a test can stop, kill and restart.
 */

/** A Redis server run by a test. */
export interface RedisNode {
  readonly port: number;
  /** `redis://127.0.0.1:<port>` */
  readonly url: string;
  /** True while the server process runs. */
  readonly running: boolean;
  /** Graceful shutdown (SIGTERM); resolves when the process exited. */
  stop(): Promise<void>;
  /** Abrupt death (SIGKILL), like a crashed host. */
  kill(): Promise<void>;
  /** Starts the server again on the same port (stopping it first if it runs). Data is gone. */
  restart(): Promise<void>;
}

/** A TCP port free on 127.0.0.1 right now. */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once("exit", () => resolve()));
}

/** Spawns redis-server and resolves once it accepts connections. */
function spawnServer(port: number, dir: string): Promise<ChildProcess> {
  const args = ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"];
  const child = spawn("redis-server", [...args, "--daemonize", "no", "--dir", dir, "--loglevel", "notice"], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  const killOnExit = () => child.kill("SIGKILL");
  process.once("exit", killOnExit);
  child.once("exit", () => process.off("exit", killOnExit));
  return new Promise((resolve, reject) => {
    let output = "";
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`redis-server on port ${port} did not start within 10 s:\n${output}`));
    }, 10_000);
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      if (output.includes("Ready to accept connections")) {
        clearTimeout(timer);
        child.stdout?.off("data", onData);
        child.stdout?.resume();
        child.stderr?.resume();
        resolve(child);
      }
    };
    child.stdout?.on("data", onData);
    child.stderr?.on("data", (chunk: Buffer) => (output += chunk.toString()));
    child.once("error", (err) => {
      clearTimeout(timer);
      reject(new Error(`cannot run redis-server (is it installed?): ${err.message}`));
    });
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`redis-server on port ${port} exited (${code ?? signal}):\n${output}`));
    });
  });
}

/**
 * Starts a Redis node on `port` (default: a free one) and waits until it is ready.
 * Call `stop()` in afterAll; a leftover process is killed when the test process exits.
 */
export async function startRedisNode(port?: number): Promise<RedisNode> {
  const dir = mkdtempSync(join(tmpdir(), "keymesh-redis-"));
  let chosen = port ?? (await freePort());
  let child: ChildProcess | undefined;
  for (let attempt = 1; child === undefined; attempt++) {
    try {
      child = await spawnServer(chosen, dir);
    } catch (err) {
      // Another process may have taken a "free" port in between; pick another.
      if (port !== undefined || attempt >= 3) throw err;
      chosen = await freePort();
    }
  }

  const halt = async (signal: NodeJS.Signals) => {
    const c = child;
    if (c === undefined || c.exitCode !== null || c.signalCode !== null) return;
    c.kill(signal);
    await exited(c);
  };

  return {
    port: chosen,
    url: `redis://127.0.0.1:${chosen}`,
    get running() {
      return child !== undefined && child.exitCode === null && child.signalCode === null;
    },
    async stop() {
      await halt("SIGTERM");
      rmSync(dir, { recursive: true, force: true });
    },
    kill: () => halt("SIGKILL"),
    async restart() {
      await halt("SIGTERM");
      mkdirSync(dir, { recursive: true });
      child = await spawnServer(chosen, dir);
    },
  };
}
