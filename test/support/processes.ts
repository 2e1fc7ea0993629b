import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import type { Knex } from "knex";
import { createConnection } from "mysql2/promise";
import { Health, HealthCheckResponse_ServingStatus } from "../../gen/grpc/health/v1/health_pb.js";
import { CollectionService } from "../../gen/keymesh/collection/v1/collection_service_pb.js";
import { ExecutorService, JobState, type JobProgress } from "../../gen/keymesh/executor/v1/executor_service_pb.js";
import { KeyManagementService } from "../../gen/keymesh/keys/v1/key_management_service_pb.js";
import { createDatabase, type Database } from "../../services/shared/storage/database.js";
import { registeredMigrations } from "../../services/migrations.js";
import { migrate } from "../../services/shared/storage/migrate.js";
import { ensureRootToken } from "../../services/shared/root-token.js";
import { checkInvariants } from "./invariants.js";
import { bearer as bearerInterceptor } from "./host.js";
import { createTestDatabase, testMysqlUrl, type TestDatabase } from "./mysql.js";
import { freePort, startRedisNode, type RedisNode } from "./redis-nodes.js";
import { afterAll, beforeAll } from "vitest";

/**
 * Real keymesh processes for fault tests: `node bin/keymesh.js serve <services…>` children on
 * fixed loopback ports that a test can SIGKILL, SIGSTOP/SIGCONT and restart on the same port,
 * with their output kept for diagnostics. A `ProcessGroup` owns its children: `close()` (call
 * it in afterAll) kills whatever still runs, and a leftover child is killed when the test
 * process exits.
 */

const BIN = fileURLToPath(new URL("../../bin/keymesh.js", import.meta.url));
/** Output kept per process (older output is dropped from the front). */
const MAX_OUTPUT = 1_000_000;

/** How a process ended. */
export interface Exit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

/** What to run. */
export interface ProcessSpec {
  /** A label for diagnostics, e.g. "executor-a". */
  readonly name: string;
  /** Services to serve, e.g. ["keys", "collection"]. */
  readonly services: readonly string[];
  /** Fixed port (default: a free one, kept across restarts). */
  readonly port?: number;
  /** KEYMESH_* variables (the test's own KEYMESH_* environment is not inherited). */
  readonly env?: Record<string, string>;
  /** Extra `serve` arguments, e.g. ["--no-migrate"]. */
  readonly args?: readonly string[];
  /** Arguments for node itself, before the script (e.g. ["--cpu-prof"]). */
  readonly nodeArgs?: readonly string[];
}

/** One keymesh process (across its restarts). */
export interface MeshProcess {
  readonly name: string;
  readonly port: number;
  /** http://127.0.0.1:<port> */
  readonly url: string;
  /** The pid of the current incarnation. */
  readonly pid: number;
  /** True from spawn until exit (a stopped process is still alive). */
  readonly alive: boolean;
  /** How many times it was started. */
  readonly starts: number;
  /** Spawns it (if not alive) and waits until it serves. */
  start(timeoutMs?: number): Promise<void>;
  /** SIGKILL; resolves once it has exited. */
  kill(): Promise<Exit>;
  /** SIGSTOP: frozen, sockets open. */
  stop(): void;
  /** SIGCONT. */
  cont(): void;
  /** SIGTERM, then SIGKILL after `timeoutMs`; resolves once it has exited. */
  terminate(timeoutMs?: number): Promise<Exit>;
  /** Kills it (if alive) and starts it again on the same port. */
  restart(timeoutMs?: number): Promise<void>;
  /** Resolves when the current incarnation exits, rejects after `timeoutMs`. */
  waitForExit(timeoutMs: number): Promise<Exit>;
  /** True when the kernel reports the process stopped (state T), e.g. after a stop failpoint. */
  isStopped(): boolean;
  /** Waits until `isStopped()`; rejects after `timeoutMs` or if it exits. */
  waitUntilStopped(timeoutMs: number): Promise<void>;
  /** The JSON log lines of every incarnation so far. */
  logs(): Record<string, unknown>[];
  /** The last `lines` lines of stdout and stderr, labelled, for failure messages. */
  tail(lines?: number): string;
  /** Everything kept of stdout and stderr. */
  output(): string;
}

/** A set of processes cleaned up together. */
export interface ProcessGroup {
  /** Starts a process and waits until it serves. */
  start(spec: ProcessSpec, timeoutMs?: number): Promise<MeshProcess>;
  /** Creates a process without starting it (its port is chosen now and kept across restarts). */
  create(spec: ProcessSpec): Promise<MeshProcess>;
  readonly processes: readonly MeshProcess[];
  /** State and output tails of every process. */
  diagnostics(lines?: number): string;
  /** Kills every process still alive (SIGCONT first for stopped ones). Safe to call twice. */
  close(): Promise<void>;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Rejects with `what` (and the diagnostics) when `promise` does not settle within `ms`. */
export async function within<T>(promise: Promise<T>, ms: number, what: string, diagnostics?: () => string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not done within ${ms} ms${diagnostics ? `\n${diagnostics()}` : ""}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `check` every `everyMs` until it returns a truthy value; rejects after `timeoutMs`. */
export async function until<T>(check: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs: number, what: string, everyMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`${what}: not reached within ${timeoutMs} ms${lastError ? ` (last error: ${String(lastError)})` : ""}`);
    }
    await sleep(everyMs);
  }
}

function processState(pid: number): string | undefined {
  try {
    // /proc/<pid>/stat: "pid (comm) S …"; comm may contain spaces, so split after the last ")".
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
  } catch {
    return undefined;
  }
}

async function healthy(url: string): Promise<boolean> {
  const manager = new Http2SessionManager(url);
  try {
    const client = createClient(Health, createGrpcTransport({ baseUrl: url, sessionManager: manager }));
    const res = await client.check({ service: "" }, { timeoutMs: 1000 });
    return res.status === HealthCheckResponse_ServingStatus.SERVING;
  } catch {
    return false;
  } finally {
    manager.abort();
  }
}

/** Creates an empty group; call `close()` in afterAll. */
export function createProcessGroup(): ProcessGroup {
  const all: (MeshProcess & { forceKill(): void })[] = [];
  const children = new Set<ChildProcess>();
  const onExit = () => {
    for (const c of children) {
      try {
        c.kill("SIGKILL");
      } catch {
        // already gone
      }
    }
  };
  process.once("exit", onExit);

  async function create(spec: ProcessSpec): Promise<MeshProcess> {
    // Ports are chosen before anything listens on them: never hand out one twice.
    let port = spec.port ?? (await freePort());
    while (spec.port === undefined && all.some((p) => p.port === port)) port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    let child: ChildProcess | undefined;
    let exit: Promise<Exit> = Promise.resolve({ code: null, signal: null });
    let out = "";
    let err = "";
    let starts = 0;
    // Whether the current incarnation has logged that it serves (read line by line as it comes).
    let serving = false;
    let partial = "";
    const watchLines = (chunk: string) => {
      const lines = (partial + chunk).split("\n");
      partial = lines.pop() ?? "";
      if (!serving && lines.some((l) => l.startsWith("{") && l.includes('"keymesh serving"'))) serving = true;
    };
    const append = (which: "out" | "err", chunk: string) => {
      if (which === "out") out = (out + chunk).slice(-MAX_OUTPUT);
      else err = (err + chunk).slice(-MAX_OUTPUT);
    };
    const alive = () => child !== undefined && child.exitCode === null && child.signalCode === null;

    const spawnOnce = () => {
      const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("KEYMESH_") && !k.startsWith("OTEL_")));
      const c = spawn(process.execPath, [...(spec.nodeArgs ?? []), BIN, "serve", ...spec.services, "--port", String(port), ...(spec.args ?? [])], {
        env: { ...base, KEYMESH_LOG_LEVEL: "info", OTEL_SDK_DISABLED: "true", ...spec.env },
        stdio: ["ignore", "pipe", "pipe"],
      });
      starts++;
      const banner = `--- start #${starts} at ${new Date().toISOString()} (pid ${c.pid}) ---\n`;
      append("out", banner);
      append("err", banner);
      serving = false;
      partial = "";
      c.stdout!.setEncoding("utf8").on("data", (chunk: string) => {
        append("out", chunk);
        watchLines(chunk);
      });
      c.stderr!.setEncoding("utf8").on("data", (chunk: string) => append("err", chunk));
      exit = new Promise<Exit>((resolve) => {
        c.once("exit", (code, signal) => {
          children.delete(c);
          append("err", `--- pid ${c.pid} exited (${code ?? signal}) at ${new Date().toISOString()} ---\n`);
          resolve({ code, signal });
        });
      });
      c.once("error", (e) => append("err", `spawn error: ${e.message}\n`));
      children.add(c);
      child = c;
    };

    const logs = () =>
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

    const tail = (lines = 30) => {
      const last = (s: string) => s.trimEnd().split("\n").slice(-lines).join("\n");
      const state = alive() ? (processState(child!.pid!) === "T" ? "stopped" : "running") : "exited";
      return `== ${spec.name} [${spec.services.join(" ")}] ${url} pid ${child?.pid ?? "-"} ${state}, started ${starts}x ==\n` +
        `-- stdout --\n${last(out)}\n-- stderr --\n${last(err)}`;
    };

    const waitForExit = (timeoutMs: number) => within(exit, timeoutMs, `${spec.name} to exit`, () => tail());

    const proc: MeshProcess & { forceKill(): void } = {
      name: spec.name,
      port,
      url,
      get pid() {
        return child?.pid ?? 0;
      },
      get alive() {
        return alive();
      },
      get starts() {
        return starts;
      },
      async start(timeoutMs = 90_000) {
        if (alive()) return;
        spawnOnce();
        const deadline = Date.now() + timeoutMs;
        // The host logs "keymesh serving" once it listens; health then confirms it answers.
        for (;;) {
          if (!alive()) throw new Error(`${spec.name} exited before serving\n${tail(60)}`);
          if (serving && (await healthy(url))) return;
          if (Date.now() > deadline) {
            child?.kill("SIGKILL");
            throw new Error(`${spec.name} did not serve on ${url} within ${timeoutMs} ms\n${tail(60)}`);
          }
          await sleep(50);
        }
      },
      async kill() {
        if (alive()) child!.kill("SIGKILL");
        return waitForExit(10_000);
      },
      stop() {
        if (alive()) child!.kill("SIGSTOP");
      },
      cont() {
        if (alive()) child!.kill("SIGCONT");
      },
      async terminate(timeoutMs = 10_000) {
        if (!alive()) return exit;
        child!.kill("SIGCONT");
        child!.kill("SIGTERM");
        try {
          return await within(exit, timeoutMs, `${spec.name} to stop on SIGTERM`);
        } catch {
          child!.kill("SIGKILL");
          return waitForExit(10_000);
        }
      },
      async restart(timeoutMs?: number) {
        await proc.kill();
        await proc.start(timeoutMs);
      },
      waitForExit,
      isStopped: () => alive() && processState(child!.pid!) === "T",
      async waitUntilStopped(timeoutMs) {
        const deadline = Date.now() + timeoutMs;
        for (;;) {
          if (!alive()) throw new Error(`${spec.name} exited instead of stopping\n${tail()}`);
          if (processState(child!.pid!) === "T") return;
          if (Date.now() > deadline) throw new Error(`${spec.name} did not stop (SIGSTOP) within ${timeoutMs} ms\n${tail()}`);
          await sleep(20);
        }
      },
      logs,
      tail,
      output: () => `-- stdout --\n${out}\n-- stderr --\n${err}`,
      forceKill() {
        if (!alive()) return;
        child!.kill("SIGCONT");
        child!.kill("SIGKILL");
      },
    };
    all.push(proc);
    return proc;
  }

  let closed: Promise<void> | undefined;
  return {
    create,
    async start(spec, timeoutMs) {
      const proc = await create(spec);
      await proc.start(timeoutMs);
      return proc;
    },
    get processes() {
      return all;
    },
    diagnostics(lines = 30) {
      return all.map((p) => p.tail(lines)).join("\n\n");
    },
    close() {
      closed ??= (async () => {
        for (const p of all) p.forceKill();
        await Promise.all(all.map((p) => p.waitForExit(10_000).catch(() => undefined)));
        // KEYMESH_TEST_LOG_DIR=<dir> keeps every process's whole output for a post-mortem.
        const dir = process.env.KEYMESH_TEST_LOG_DIR;
        if (dir) {
          mkdirSync(dir, { recursive: true });
          const run = `${new Date().toISOString().replace(/[:.]/g, "-")}-${process.pid}`;
          for (const p of all) writeFileSync(join(dir, `${run}-${p.name}.log`), p.output());
        }
        process.off("exit", onExit);
      })();
      return closed;
    },
  };
}

// ---------------------------------------------------------------------------------------------
// A signing mesh of real processes on a throwaway MariaDB database.

/** Options for `startSigningMesh`. */
export interface SigningMeshOptions {
  /** KEYMESH_REDIS_URL of the keys service: one URL or several (a quorum). */
  readonly redisUrls: readonly string[];
  /** Executor processes to start (default 1). */
  readonly executors?: number;
  /** KEYMESH_FAILPOINTS per executor index, e.g. { 0: "executor.batch-sent=kill@3" }. */
  readonly failpoints?: Record<number, string>;
  /** Extra environment for every process. */
  readonly env?: Record<string, string>;
  /** Extra environment for one process, by name ("keys+collection", "signing", "executor-1", ...). */
  readonly envFor?: (name: string) => Record<string, string>;
  /** Extra node arguments for every process. */
  readonly nodeArgs?: readonly string[];
}

/** The processes and clients of one signing mesh. */
export interface SigningMesh {
  readonly database: TestDatabase;
  /** The test's own connection to the mesh's database (for checks). */
  readonly db: Database;
  readonly group: ProcessGroup;
  /** keys + collection in one process. */
  readonly keysCollection: MeshProcess;
  readonly signing: MeshProcess;
  readonly executors: MeshProcess[];
  readonly keys: Client<typeof KeyManagementService>;
  readonly collection: Client<typeof CollectionService>;
  /** A client for an executor process (cached per process). */
  executor(proc: MeshProcess): Client<typeof ExecutorService>;
  /** Starts another executor process on the same mesh. */
  addExecutor(name: string, failpoints?: string): Promise<MeshProcess>;
  /** Seeds records and creates keyring keys. */
  seed(records: number, keys: number): Promise<void>;
  /** Progress as the collection reports it (signed, total, claimed). */
  progress(): Promise<{ signed: number; total: number; claimed: number }>;
  /** Progress, job rows and every process's output tail. */
  diagnostics(): Promise<string>;
  /** Stops everything and drops the database. Safe to call twice. */
  close(): Promise<void>;
}

/**
 * Starts keys+collection, signing and `executors` executor processes on a fresh, migrated
 * MariaDB database, every process sharing one master key.
 */
export async function startSigningMesh(opts: SigningMeshOptions): Promise<SigningMesh> {
  const database = await createTestDatabase("keymesh_f_");
  const dataDir = mkdtempSync(join(tmpdir(), "keymesh-faults-"));
  // The processes run with --dev and share the data directory: the test calls as root.
  const rootToken = ensureRootToken(dataDir).token;
  // Quiet: fault tests kill this pool's idle connections too, and knex would print each loss.
  const quiet = () => undefined;
  const db = createDatabase({ url: database.url, dataDir, logger: { warn: quiet, error: quiet, debug: quiet, deprecate: quiet } });
  const group = createProcessGroup();
  const managers: Http2SessionManager[] = [];
  const transport = (url: string) => {
    const manager = new Http2SessionManager(url);
    managers.push(manager);
    return createGrpcTransport({ baseUrl: url, sessionManager: manager, interceptors: [bearerInterceptor(rootToken)] });
  };
  let closed: Promise<void> | undefined;
  const close = () => {
    closed ??= (async () => {
      for (const m of managers) m.abort();
      await group.close();
      await db.close().catch(() => undefined);
      // KEYMESH_TEST_KEEP_DATABASE=1 keeps it for a post-mortem (its name is in the diagnostics).
      if (process.env.KEYMESH_TEST_KEEP_DATABASE !== "1") await database.drop().catch(() => undefined);
      rmSync(dataDir, { recursive: true, force: true });
    })();
    return closed;
  };

  try {
    await migrate(db, await registeredMigrations());
    const common: Record<string, string> = {
      KEYMESH_DATA_DIR: dataDir,
      KEYMESH_MASTER_KEYS: `1:${randomBytes(32).toString("base64")}`,
      KEYMESH_SHUTDOWN_TIMEOUT_MS: "2000",
      KEYMESH_SERVICE_TOKEN: `kms_${randomBytes(24).toString("base64url")}`,
      ...opts.env,
    };
    const keysCollection = await group.create({
      name: "keys+collection",
      services: ["keys", "collection"],
      nodeArgs: opts.nodeArgs,
      args: ["--no-migrate", "--dev"],
      env: { ...common, KEYMESH_DATABASE_URL: database.url, KEYMESH_REDIS_URL: opts.redisUrls.join(","), ...opts.envFor?.("keys+collection") },
    });
    const signing = await group.create({
      name: "signing",
      services: ["signing"],
      nodeArgs: opts.nodeArgs,
      args: ["--dev"],
      env: { ...common, KEYMESH_KEYS_URL: keysCollection.url, KEYMESH_COLLECTION_URL: keysCollection.url, ...opts.envFor?.("signing") },
    });
    const executorEnv = {
      ...common,
      KEYMESH_DATABASE_URL: database.url,
      KEYMESH_KEYS_URL: keysCollection.url,
      KEYMESH_COLLECTION_URL: keysCollection.url,
      KEYMESH_SIGNING_URL: signing.url,
    };
    const newExecutor = (name: string, failpoints?: string) =>
      group.create({
        name,
        services: ["executor"],
        args: ["--no-migrate", "--dev"],
        nodeArgs: opts.nodeArgs,
        env: { ...executorEnv, ...(failpoints ? { KEYMESH_FAILPOINTS: failpoints } : {}), ...opts.envFor?.(name) },
      });
    const executors: MeshProcess[] = [];
    for (let i = 0; i < (opts.executors ?? 1); i++) executors.push(await newExecutor(`executor-${i + 1}`, opts.failpoints?.[i]));
    await Promise.all([keysCollection, signing, ...executors].map((p) => p.start()));

    const keys = createClient(KeyManagementService, transport(keysCollection.url));
    const collection = createClient(CollectionService, transport(keysCollection.url));
    const executorClients = new Map<MeshProcess, Client<typeof ExecutorService>>();
    const progress = async () => {
      const g = await collection.getProgress({}, { timeoutMs: 5000 });
      return { signed: Number(g.signed), total: Number(g.total), claimed: Number(g.claimed) };
    };

    return {
      database,
      db,
      group,
      keysCollection,
      signing,
      executors,
      keys,
      collection,
      executor(proc) {
        let client = executorClients.get(proc);
        if (!client) {
          client = createClient(ExecutorService, transport(proc.url));
          executorClients.set(proc, client);
        }
        return client;
      },
      async addExecutor(name, failpoints) {
        const proc = await newExecutor(name, failpoints);
        executors.push(proc);
        await proc.start();
        return proc;
      },
      async seed(records, keyCount) {
        await collection.seedRecords({ count: records, payloadSize: 64 });
        await keys.createKeyringKeys({ count: keyCount });
      },
      progress,
      async diagnostics() {
        const parts: string[] = [`database: ${database.name}`];
        try {
          parts.push(`progress (collection): ${JSON.stringify(await progress())}`);
        } catch (e) {
          parts.push(`progress (collection) unavailable: ${String(e)}`);
        }
        try {
          parts.push(`database: ${JSON.stringify(await databaseSummary(db.primary))}`);
        } catch (e) {
          parts.push(`database summary unavailable: ${String(e)}`);
        }
        parts.push(group.diagnostics());
        return parts.join("\n");
      },
      close,
    };
  } catch (err) {
    const diag = group.diagnostics(60);
    await close();
    throw new Error(`the signing mesh did not start: ${String(err)}\n${diag}`, { cause: err });
  }
}

/** Counts that tell where a run stands: records, signatures, batches by outcome, jobs. */
export async function databaseSummary(db: Knex): Promise<Record<string, unknown>> {
  const [records] = await db("records").count({ n: "*" });
  const [signed] = await db("signatures").count({ n: "*" });
  const outcomes = (await db("batches").select("outcome").count({ n: "*" }).groupBy("outcome")) as { outcome: string; n: number }[];
  const jobs = await db("jobs").select("id", "state", "error");
  return {
    records: Number((records as { n: number }).n),
    signatures: Number((signed as { n: number }).n),
    batches: Object.fromEntries(outcomes.map((o) => [o.outcome, Number(o.n)])),
    jobs,
  };
}

// ---------------------------------------------------------------------------------------------
// Driving a job.

/** A RunJob stream being consumed in the background. */
export interface JobRun {
  /** The job id, from the first progress message. */
  readonly jobId: Promise<string>;
  /** The latest progress received (undefined before the first). */
  readonly last: JobProgress | undefined;
  /** Settles when the stream ends: its last progress, or the error that ended it. */
  readonly done: Promise<{ last: JobProgress | undefined; error?: unknown }>;
  /** Cancels the call. */
  cancel(): void;
}

/** Calls RunJob (start a job with `spec`, or join `jobId`) and consumes the stream. */
export function runJob(
  client: Client<typeof ExecutorService>,
  req: { jobId?: string; spec?: { batchSize: number; concurrency: number; leaseTtlMs: number } },
): JobRun {
  const abort = new AbortController();
  let last: JobProgress | undefined;
  let gotId: (id: string) => void = () => undefined;
  let noId: (err: unknown) => void = () => undefined;
  const jobId = new Promise<string>((resolve, reject) => {
    gotId = resolve;
    noId = reject;
  });
  jobId.catch(() => undefined);
  const done = (async () => {
    try {
      for await (const res of client.runJob({ jobId: req.jobId ?? "", spec: req.spec, progressIntervalMs: 100 }, { signal: abort.signal })) {
        last = res.progress;
        if (last?.jobId) gotId(last.jobId);
      }
      noId(new Error("RunJob ended without progress"));
      return { last };
    } catch (error) {
      noId(error);
      return { last, error };
    }
  })();
  return {
    jobId,
    get last() {
      return last;
    },
    done,
    cancel: () => abort.abort(),
  };
}

/** True when a run ended with the job succeeded. */
export function succeeded(result: { last: JobProgress | undefined; error?: unknown }): boolean {
  return result.error === undefined && result.last?.state === JobState.SUCCEEDED;
}

// ---------------------------------------------------------------------------------------------
// Database faults.

/**
 * Kills every connection to database `name` on the test server except the admin connection
 * used to do it. Returns how many were killed.
 */
export async function killDatabaseConnections(name: string): Promise<number> {
  const u = new URL(testMysqlUrl());
  const conn = await createConnection({
    host: u.hostname,
    port: u.port === "" ? 3306 : Number(u.port),
    user: decodeURIComponent(u.username) || "root",
    password: decodeURIComponent(u.password),
    connectTimeout: 5_000,
  });
  try {
    const [rows] = await conn.query("SELECT ID FROM information_schema.PROCESSLIST WHERE DB = ? AND ID <> CONNECTION_ID()", [name]);
    let killed = 0;
    for (const row of rows as { ID: number }[]) {
      try {
        await conn.query(`KILL CONNECTION ${Number(row.ID)}`);
        killed++;
      } catch {
        // It ended on its own in between.
      }
    }
    return killed;
  } finally {
    await conn.end();
  }
}

/**
 * Runs `fn`; when it throws (an assertion or a timeout), appends the mesh's diagnostics —
 * progress, database counts, every process's output — to the error message.
 */
export async function withDiagnostics<T>(mesh: Pick<SigningMesh, "diagnostics">, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    const diagnostics = await within(mesh.diagnostics(), 10_000, "diagnostics").catch((e: unknown) => `(no diagnostics: ${String(e)})`);
    if (err instanceof Error) {
      err.message = `${err.message}\n\n${diagnostics}`;
      throw err;
    }
    throw new Error(`${String(err)}\n\n${diagnostics}`);
  }
}

/** A LIKE pattern for the executor ids of the process `pid`: ids are `<hostname>/<pid>/<random>`. */
export function executorIdPattern(pid: number): string {
  return `%/${pid}/%`;
}

/** Where a run ended: the collection's progress, the job row and the invariants report. */
export async function finalState(mesh: SigningMesh, jobId: string) {
  const progress = await mesh.progress();
  const job = (await mesh.db.primary("jobs").where({ id: jobId }).first()) as { state: string; error: string | null } | undefined;
  const report = await checkInvariants(mesh.db.primary, { jobId });
  return { progress, job, report };
}

/**
 * Starts a job on the mesh's first executor and waits until at least `signed` records are
 * signed — and not all of them — so a fault can be injected mid-run.
 */
export async function startJobUntilSigned(
  mesh: SigningMesh,
  spec: { batchSize: number; concurrency: number; leaseTtlMs: number },
  signed: number,
): Promise<{ run: JobRun; jobId: string }> {
  const run = runJob(mesh.executor(mesh.executors[0]!), { spec });
  const jobId = await within(run.jobId, 15_000, "the job to start");
  const before = await until(async () => {
    const p = await mesh.progress();
    return p.signed >= signed && p;
  }, 30_000, `${signed} records signed`, 20);
  if (before.signed >= before.total) throw new Error("the job finished before the fault could be injected mid-run");
  return { run, jobId };
}

/** The size of the fault scenarios: small enough for CI, large enough to be mid-run. */
export const FAULT_RUN = { records: 2500, keys: 12, spec: { batchSize: 100, concurrency: 3, leaseTtlMs: 2000 } } as const;

/**
 * Registers beforeAll/afterAll hooks that start `redisNodes` dedicated redis-servers and a
 * signing mesh on them, seeded with FAULT_RUN's records and keys, and tear both down.
 */
export function useFaultMesh(redisNodes = 1): { mesh(): SigningMesh; redis(): RedisNode[] } {
  let nodes: RedisNode[] = [];
  let mesh: SigningMesh | undefined;
  beforeAll(async () => {
    nodes = await Promise.all(Array.from({ length: redisNodes }, () => startRedisNode()));
    mesh = await startSigningMesh({ redisUrls: nodes.map((n) => n.url) });
    await mesh.seed(FAULT_RUN.records, FAULT_RUN.keys);
  });
  afterAll(async () => {
    await mesh?.close();
    await Promise.all(nodes.map((n) => n.stop()));
  });
  return { mesh: () => mesh!, redis: () => nodes };
}
