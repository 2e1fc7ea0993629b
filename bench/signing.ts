/**
 * `npm run bench:signing`: the signing pipeline against the plain loops somebody would write
 * instead, printed as JSON with same-run ratios. Three setups, each on fresh data, each followed
 * by its plain loop on the same records (`bench/reference.ts`):
 *
 * - split: keys, collection, signing and executor each a `keymesh serve <service>` process,
 *   MariaDB and one Redis, like a deployment; against the MariaDB plain loop;
 * - all-in-one: one `keymesh serve` process running every service (what `npm start` runs),
 *   on MariaDB and Redis; against the same MariaDB plain loop;
 * - sqlite: the embedded default, `keymesh serve` with no database or Redis configured (SQLite
 *   in its data directory, in-process leases); against the SQLite plain loop.
 *
 * Each setup's job runs twice on the same processes (fresh records each time) and its plain loop
 * twice in this process: `ratio…` compares the first of each, on processes just started (V8 still
 * compiling the hot code), `ratio…Warm` the second of each, as a mesh that has been serving runs.
 * Every run also reports `coresNeededInPlainLoopTime`: its CPU time (keymesh and MariaDB) over
 * the plain loop's wall time, the cores it would need to finish as fast.
 *
 * Runs of the same code on a shared machine differ by ±10% (the plain loop's included), so one
 * round's ratio cannot tell 0.97 from 1.03. `--repeat N` runs N rounds, each setup once per
 * round (so a slow spell of the machine falls on every setup alike), reports every round's
 * ratios (`rounds`) and judges the targets on the median ones; the setups' sections and the
 * targets' CPU figures come from the round whose ratio is the median.
 *
 * Jobs run with `keymesh sign`'s defaults (concurrency 8, lease TTL 10 s) unless told otherwise.
 *
 *   npm run bench:signing                            # all three, 100k records, 100 keys, batch 1000
 *   npm run bench:signing -- --only split,sqlite     # some of them
 *   npm run bench:signing -- --tracing               # also off / tracing / tracing + metrics (split), three rounds
 *   npm run bench:signing -- --scale                 # also 1/2/4 executors and 10k/100k/1M records (split)
 *   npm run bench:signing -- --records 20000         # a quicker run
 *   npm run bench:signing -- --only split --repeat 5 # five rounds, judged on the median ratios
 *
 * KEYMESH_BENCH_PROFILE_DIR=<dir> writes a V8 CPU profile of every service process there;
 * KEYMESH_BENCH_HEAP_DIR=<dir> has every service process log its live heap (after a full
 * collection, every second: bench/live-heap.mjs) and adds the executors' to the JSON.
 */
import { generateKeyPairSync, randomBytes, sign } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createServer } from "node:http";
import { parseArgs } from "node:util";
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import knex from "knex";
import { CollectionService } from "../gen/keymesh/collection/v1/collection_service_pb.js";
import { ExecutorService } from "../gen/keymesh/executor/v1/executor_service_pb.js";
import { KeyManagementService } from "../gen/keymesh/keys/v1/key_management_service_pb.js";
import { execFileSync } from "node:child_process";
import { bearer, cpuMsOf, freePort, runKeymesh, startServe, type MeshProcess } from "./mesh-processes.js";
import { referenceLoop, resetSigningState, sqliteReferenceLoop, type ReferenceResult } from "./reference.js";
import { ensureRootToken } from "../services/shared/root-token.js";

/** The setups `--only` picks from, in the order they run. */
const SETUPS = ["split", "all-in-one", "sqlite"] as const;
type Setup = (typeof SETUPS)[number];

const { values } = parseArgs({
  options: {
    only: { type: "string", default: SETUPS.join(",") },
    records: { type: "string", default: "100000" },
    keys: { type: "string", default: "100" },
    "batch-size": { type: "string", default: "1000" },
    concurrency: { type: "string", default: "8" },
    "lease-ttl-ms": { type: "string", default: "10000" },
    // As deploy/prometheus/prometheus.yml scrapes; `--scrape-interval-ms 1000` is the worst case.
    "scrape-interval-ms": { type: "string", default: "15000" },
    // Alternated off / tracing / tracing + metrics rounds of --tracing.
    rounds: { type: "string", default: "5" },
    // Rounds of the setups' measurements; the targets are judged on the medians.
    repeat: { type: "string", default: "1" },
    scale: { type: "boolean", default: false },
    tracing: { type: "boolean", default: false },
    "mysql-url": { type: "string", default: process.env.KEYMESH_BENCH_MYSQL_URL ?? "mysql://root@127.0.0.1:3306" },
    "redis-url": { type: "string", default: process.env.KEYMESH_BENCH_REDIS_URL ?? "redis://127.0.0.1:6379" },
  },
});
const ONLY = setupsOf(values.only);
const RECORDS = Number(values.records);
const KEYS = Number(values.keys);
const BATCH = Number(values["batch-size"]);
const CONCURRENCY = Number(values.concurrency);
const LEASE_TTL_MS = Number(values["lease-ttl-ms"]);
const SCRAPE_INTERVAL_MS = Number(values["scrape-interval-ms"]);
const ROUNDS = Number(values.rounds);
const REPEAT = Number(values.repeat);
if (!Number.isInteger(REPEAT) || REPEAT < 1) {
  process.stderr.write(`bench: --repeat takes a whole number of rounds, at least 1; got "${values.repeat}"\n`);
  process.exit(2);
}
// KEYMESH_BENCH_DATABASE picks another name, so that two benches on one server do not collide.
const DB_NAME = process.env.KEYMESH_BENCH_DATABASE ?? "keymesh_bench";
const MARIADB_URL = `${values["mysql-url"]}/${DB_NAME}`;
/** KEYMESH_BENCH_HEAP_DIR: where the processes log their live heap (see bench/live-heap.mjs). */
const HEAP_DIR = process.env.KEYMESH_BENCH_HEAP_DIR;
/** Where the embedded default keeps its database, under KEYMESH_DATA_DIR (docs/configuration.md). */
const SQLITE_FILE = "keymesh.sqlite";

const log = (msg: string) => process.stderr.write(`bench: ${msg}\n`);

/** `--only a,b`: the setups to run, in their usual order; anything unknown stops the bench. */
function setupsOf(raw: string): Setup[] {
  const picked = raw.split(",").map((s) => s.trim()).filter((s) => s !== "");
  const unknown = picked.filter((s) => !(SETUPS as readonly string[]).includes(s));
  if (picked.length === 0 || unknown.length > 0) {
    process.stderr.write(`bench: --only takes a comma-separated list of ${SETUPS.join(", ")}; got "${raw}"\n`);
    process.exit(2);
  }
  return SETUPS.filter((s) => picked.includes(s));
}

/** A keymesh process of a mesh; `cpuKey` names its entry in the CPU breakdown. */
interface NamedProcess {
  cpuKey: string;
  proc: MeshProcess;
}

interface Mesh {
  procs: NamedProcess[];
  /** The processes running the executor service (in all-in-one and sqlite, the one process). */
  executors: MeshProcess[];
  collection: Client<typeof CollectionService>;
  keys: Client<typeof KeyManagementService>;
  executorClients: Client<typeof ExecutorService>[];
  /** The processes' /metrics URLs (empty unless started with metrics). */
  metricsUrls: string[];
  /** The embedded setup's SQLite file; undefined on MariaDB. */
  sqliteFile: string | undefined;
  stop(): Promise<void>;
}

/** Data directories made by this run, removed at its end. */
const dataDirs: string[] = [];

async function recreateDatabase(): Promise<void> {
  const admin = knex({ client: "mysql2", connection: values["mysql-url"] });
  await admin.raw(`DROP DATABASE IF EXISTS \`${DB_NAME}\``);
  await admin.raw(`CREATE DATABASE \`${DB_NAME}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin`);
  await admin.destroy();
}

/**
 * Starts a mesh of `setup` on a fresh data directory and brings its schema up to date with
 * `keymesh migrate`. split: keys, collection, signing and `executors` executor processes, each
 * on its own port, calling each other with a service token as a deployment does. all-in-one:
 * one `keymesh serve` running every service, on MariaDB and Redis. sqlite: the same with no
 * database or Redis configured, as `npm start` runs out of the box. With `metrics`, each process
 * also serves /metrics on a port of its own (KEYMESH_METRICS_PORT), scraped every second while
 * a job runs.
 */
async function startMesh(setup: Setup, executors = 1, extraEnv: NodeJS.ProcessEnv = {}, metrics = false): Promise<Mesh> {
  // Every process runs with --dev on one data directory: the bench drives the mesh as root.
  const dataDir = mkdtempSync(join(tmpdir(), "keymesh-bench-"));
  dataDirs.push(dataDir);
  const rootToken = ensureRootToken(dataDir).token;
  let env: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: process.env.HOME, KEYMESH_LOG_LEVEL: "warn", KEYMESH_DATA_DIR: dataDir };
  if (setup !== "sqlite") env = { ...env, KEYMESH_DATABASE_URL: MARIADB_URL, KEYMESH_REDIS_URL: values["redis-url"] };
  const ports = { keys: await freePort(), collection: await freePort(), signing: await freePort() };
  if (setup === "split") {
    env = {
      ...env,
      KEYMESH_MASTER_KEYS: MASTER_KEYS,
      KEYMESH_KEYS_URL: `http://127.0.0.1:${ports.keys}`,
      KEYMESH_COLLECTION_URL: `http://127.0.0.1:${ports.collection}`,
      KEYMESH_SIGNING_URL: `http://127.0.0.1:${ports.signing}`,
      KEYMESH_SERVICE_TOKEN: randomBytes(24).toString("base64url"),
    };
  }
  env = { ...env, ...extraEnv };
  await runKeymesh(["migrate"], env);
  const sqliteFile = setup === "sqlite" ? join(dataDir, SQLITE_FILE) : undefined;
  if (sqliteFile && !existsSync(sqliteFile)) throw new Error(`keymesh migrate made no ${sqliteFile}: has the embedded database moved?`);
  // KEYMESH_BENCH_PROFILE_DIR=<dir> writes a V8 CPU profile of every service process there.
  const profile = process.env.KEYMESH_BENCH_PROFILE_DIR;
  const nodeArgs = profile ? ["--cpu-prof", `--cpu-prof-dir=${profile}`] : [];
  if (HEAP_DIR) {
    nodeArgs.push("--expose-gc", "--import", new URL("./live-heap.mjs", import.meta.url).href);
    env = { ...env, KEYMESH_BENCH_HEAP_DIR: HEAP_DIR };
  }
  const metricsUrls: string[] = [];
  const envOf = async () => {
    if (!metrics) return env;
    const port = await freePort();
    metricsUrls.push(`http://127.0.0.1:${port}/metrics`);
    return { ...env, KEYMESH_METRICS_PORT: String(port) };
  };
  let procs: NamedProcess[];
  let executorProcs: MeshProcess[];
  if (setup === "split") {
    const [keys, collection, signing] = await Promise.all([
      startServe(["keys"], ports.keys, await envOf(), nodeArgs),
      startServe(["collection"], ports.collection, await envOf(), nodeArgs),
      startServe(["signing"], ports.signing, await envOf(), nodeArgs),
    ]);
    executorProcs = await Promise.all(Array.from({ length: executors }, async () => startServe(["executor"], await freePort(), await envOf(), nodeArgs)));
    procs = [
      { cpuKey: "keys", proc: keys! },
      { cpuKey: "collection", proc: collection! },
      { cpuKey: "signing", proc: signing! },
      ...executorProcs.map((proc) => ({ cpuKey: "executors", proc })),
    ];
  } else {
    // No service names: every service in one process, as `keymesh serve` (and `npm start`) runs.
    const serve = await startServe([], await freePort(), await envOf(), nodeArgs);
    executorProcs = [serve];
    procs = [{ cpuKey: "serve", proc: serve }];
  }
  const urlOf = (cpuKey: string) => (procs.find((p) => p.cpuKey === cpuKey) ?? procs[0]!).proc.url;
  const client = <S extends Parameters<typeof createClient>[0]>(desc: S, url: string) =>
    createClient(desc, createGrpcTransport({ baseUrl: url, acceptCompression: [], interceptors: [bearer(rootToken)] })) as Client<S>;
  return {
    procs,
    executors: executorProcs,
    collection: client(CollectionService, urlOf("collection")),
    keys: client(KeyManagementService, urlOf("keys")),
    executorClients: executorProcs.map((p) => client(ExecutorService, p.url)),
    metricsUrls,
    sqliteFile,
    async stop() {
      await Promise.all(procs.map((p) => p.proc.stop()));
    },
  };
}

function mariadbPid(): number | undefined {
  try {
    return Number(execFileSync("pgrep", ["-x", "mariadbd"]).toString().trim().split("\n")[0]);
  } catch {
    return undefined;
  }
}

/**
 * Runs one job over every unsigned record with all executors of the mesh, with `keymesh sign`'s
 * spec, and returns its timings, the CPU time of every process (MariaDB's too unless the mesh
 * is on SQLite; other users of the server count in it) and the executors' memory, whose peak is
 * taken over the job alone.
 */
async function runJob(mesh: Mesh, batchSize: number) {
  await quiesce();
  const dbPid = mesh.sqliteFile ? undefined : mariadbPid();
  for (const e of mesh.executors) e.resetPeakMemory();
  const cpuBefore = mesh.procs.map((p) => p.proc.cpuMs());
  const dbBefore = dbPid ? cpuMsOf(dbPid) : 0;
  const started = performance.now();
  // Scraped like Prometheus: at once, then every --scrape-interval-ms.
  let scrapes = 0;
  const scrape = () => {
    for (const u of mesh.metricsUrls) void fetch(u).then((r) => r.text()).then(() => scrapes++, () => undefined);
  };
  if (mesh.metricsUrls.length > 0) scrape();
  const scraper = setInterval(scrape, SCRAPE_INTERVAL_MS);
  const spec = { batchSize, concurrency: CONCURRENCY, leaseTtlMs: LEASE_TTL_MS };
  let jobId = "";
  const first = (async () => {
    let last;
    for await (const res of mesh.executorClients[0]!.runJob({ spec, progressIntervalMs: 200 })) {
      last = res.progress;
      jobId ||= last?.jobId ?? "";
    }
    return last;
  })();
  while (!jobId && mesh.executorClients.length > 1) await new Promise((r) => setTimeout(r, 10));
  const joiners = mesh.executorClients.slice(1).map(async (c) => {
    for await (const _ of c.runJob({ jobId, spec: { concurrency: CONCURRENCY, leaseTtlMs: LEASE_TTL_MS } })) void _;
  });
  const [last] = await Promise.all([first, ...joiners]).finally(() => clearInterval(scraper));
  const wallMs = performance.now() - started;
  if (!last || Number(last.signedRecords) !== Number(last.totalRecords)) throw new Error(`job did not finish: ${JSON.stringify(last, (_, v) => (typeof v === "bigint" ? Number(v) : v))}`);
  const cpuMs: Record<string, number | number[]> = {};
  let keymeshCpuMs = 0;
  mesh.procs.forEach((p, i) => {
    const ms = p.proc.cpuMs() - cpuBefore[i]!;
    keymeshCpuMs += ms;
    if (p.cpuKey === "executors") cpuMs.executors = [...((cpuMs.executors as number[] | undefined) ?? []), ms];
    else cpuMs[p.cpuKey] = ms;
  });
  cpuMs.allKeymeshProcesses = keymeshCpuMs;
  if (dbPid) cpuMs.mariadb = cpuMsOf(dbPid) - dbBefore;
  const stats = await mesh.collection.getBatchStats({ jobId: last.jobId });
  return {
    records: Number(last.totalRecords),
    wallMs: Math.round(wallMs),
    recordsPerSecond: Math.round((Number(last.totalRecords) * 1000) / wallMs),
    batchLatencyMs: { p50: Number(stats.batchLatencyP50Ms), p99: Number(stats.batchLatencyP99Ms) },
    ...(mesh.metricsUrls.length > 0 ? { metricsScrapes: scrapes } : {}),
    keysUsed: stats.keysUsed,
    duplicates: Number(stats.duplicateSignatures),
    executorRssMiB: mesh.executors.map((e) => e.memory()),
    ...(HEAP_DIR ? { executorLiveHeapMiB: mesh.executors.map((e) => liveHeapOf(e.pid, started, performance.timeOrigin)) } : {}),
    cpuMs: cpuMs as { allKeymeshProcesses: number } & Record<string, number | number[]>,
  };
}

type JobRun = Awaited<ReturnType<typeof runJob>>;

/**
 * A process's live heap during a job (heap used after a full collection, MiB), from the log
 * bench/live-heap.mjs writes: the first and last sample of the job and the largest.
 */
function liveHeapOf(pid: number, startedAt: number, timeOrigin: number) {
  const from = timeOrigin + startedAt;
  const file = join(HEAP_DIR!, `live-heap.${pid}.log`);
  const samples = existsSync(file)
    ? readFileSync(file, "utf8").trim().split("\n").map((l) => l.split(" ").map(Number)).filter(([at]) => at! >= from).map(([, used]) => used! / 1048576)
    : [];
  if (samples.length === 0) return { samples: 0 };
  const mib = (x: number) => Number(x.toFixed(1));
  return { samples: samples.length, firstMiB: mib(samples[0]!), maxMiB: mib(Math.max(...samples)), lastMiB: mib(samples.at(-1)!) };
}

async function seed(mesh: Mesh, records: number, keys: number) {
  await mesh.collection.deleteRecords({});
  const started = performance.now();
  for (let left = records; left > 0; left -= 100_000) await mesh.collection.seedRecords({ count: Math.min(left, 100_000) });
  const have = (await mesh.keys.listKeyringKeys({ pageSize: 10_000 })).keys.length;
  if (have < keys) await mesh.keys.createKeyringKeys({ count: keys - have });
  return Math.round(performance.now() - started);
}

/**
 * One measured job of `setup` on fresh data (a fresh MariaDB database, or a fresh SQLite file),
 * so that no run pays for the previous one's deleted rows, which InnoDB purges in the
 * background on the same two cores. The mesh is stopped before this returns; its database stays
 * for the plain loop.
 */
async function meshRun(setup: Setup, opts: { records: number; executors?: number; env?: NodeJS.ProcessEnv; metrics?: boolean; again?: boolean }) {
  if (setup !== "sqlite") await recreateDatabase();
  const mesh = await startMesh(setup, opts.executors ?? 1, opts.env, opts.metrics);
  try {
    const seedMs = await step(`${setup}: seeding`, () => seed(mesh, opts.records, KEYS), mesh);
    const run = await step(`${setup}: the job`, () => runJob(mesh, BATCH), mesh);
    if (!opts.again) return { run, seedMs, sqliteFile: mesh.sqliteFile };
    // The same job again on the same processes, on records seeded afresh: what a mesh that has
    // been serving for a while does, its code compiled by V8's optimizing tiers.
    log(`${setup}: ${run.wallMs} ms; the same job again on the same processes`);
    await step(`${setup}: seeding again`, () => seed(mesh, opts.records, KEYS), mesh);
    return { run, again: await step(`${setup}: the job again`, () => runJob(mesh, BATCH), mesh), seedMs, sqliteFile: mesh.sqliteFile };
  } finally {
    await mesh.stop();
  }
}

/** Runs one step of a measurement; a failure says which step it was. */
async function step<T>(what: string, fn: () => Promise<T>, mesh?: Mesh): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    // What the mesh's processes last said (a process that died says why).
    const said = (mesh?.procs ?? []).map(({ cpuKey, proc }) => {
      const { text, exitCode, signal } = proc.output();
      const state = exitCode === null && signal === null ? "running" : `exited (${signal ?? exitCode})`;
      return `--- ${cpuKey} (pid ${proc.pid}, ${state}):\n${text.slice(-4000)}`;
    });
    throw new Error([`${what} failed: ${err instanceof Error ? err.message : String(err)}`, ...said].join("\n"), { cause: err });
  }
}

/**
 * Waits until MariaDB is idle (under 5% of a core over half a second, at most a minute), so a
 * measured run does not pay for background work left by the previous step (purge, flushing).
 */
async function quiesce(): Promise<void> {
  const pid = mariadbPid();
  if (!pid) return;
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    const before = cpuMsOf(pid);
    await new Promise((r) => setTimeout(r, 500));
    if (cpuMsOf(pid) - before < 25) return;
  }
}

/** The MariaDB plain loop on the records the mesh just signed, its signing state reset first. */
async function mariadbPlainLoop() {
  const db = knex({ client: "mysql2", connection: MARIADB_URL });
  await resetSigningState(db).finally(() => db.destroy());
  await quiesce();
  const dbPid = mariadbPid();
  const before = { own: process.cpuUsage(), db: dbPid ? cpuMsOf(dbPid) : 0 };
  const ref = await referenceLoop(MARIADB_URL, { batchSize: BATCH, keyCount: KEYS });
  return plainLoopResult(ref, { loop: ownCpuMsSince(before.own), ...(dbPid ? { mariadb: cpuMsOf(dbPid) - before.db } : {}) });
}

/** The SQLite plain loop on the embedded mesh's file (the mesh stopped), its signing state reset first. */
async function sqlitePlainLoop(file: string) {
  const db = knex({ client: "better-sqlite3", connection: { filename: file }, useNullAsDefault: true });
  await resetSigningState(db).finally(() => db.destroy());
  const before = process.cpuUsage();
  const ref = sqliteReferenceLoop(file, { batchSize: BATCH, keyCount: KEYS });
  return plainLoopResult(ref, { loop: ownCpuMsSince(before) });
}

function ownCpuMsSince(before: NodeJS.CpuUsage): number {
  const used = process.cpuUsage(before);
  return Math.round((used.user + used.system) / 1000);
}

function plainLoopResult(ref: ReferenceResult, cpuMs: Record<string, number>) {
  return { records: ref.signed, wallMs: Math.round(ref.wallMs), recordsPerSecond: Math.round((ref.signed * 1000) / ref.wallMs), cpuMs, exactWallMs: ref.wallMs };
}

const ABOUT: Record<Setup, { mesh: string; plainLoop: string }> = {
  split: {
    mesh: "keys, collection, signing and executor each a `keymesh serve <service>` process; MariaDB and one Redis",
    plainLoop: "bench/reference.ts referenceLoop: one process, mysql2 pool of 4, 4 batches in flight; prepared SELECT by id range, Ed25519 on the main thread, one prepared multi-row INSERT",
  },
  "all-in-one": {
    mesh: "one `keymesh serve` process running every service (what `npm start` + `keymesh sign` runs); MariaDB and one Redis",
    plainLoop: "bench/reference.ts referenceLoop: one process, mysql2 pool of 4, 4 batches in flight; prepared SELECT by id range, Ed25519 on the main thread, one prepared multi-row INSERT",
  },
  sqlite: {
    mesh: "one `keymesh serve` process with no database or Redis configured: SQLite file in its data directory, in-process leases",
    plainLoop: "bench/reference.ts sqliteReferenceLoop: better-sqlite3 on the same file, one batch at a time; prepared SELECT by id range, Ed25519 on the main thread, one prepared multi-row INSERT in one transaction per batch",
  },
};

/** The JSON key of each setup's section and of its ratio. */
const KEYS_OF: Record<Setup, { section: string; ratio: string }> = {
  split: { section: "split", ratio: "ratioSplitToPlainLoop" },
  "all-in-one": { section: "allInOne", ratio: "ratioAllInOneToPlainLoop" },
  sqlite: { section: "sqlite", ratio: "ratioSqliteToPlainLoop" },
};

/**
 * One setup's job, then its plain loop on the same records: the pair behind one ratio. Each
 * runs twice: the first job on freshly started processes and the first plain loop in this
 * process are "cold" (their code still on its way through V8's tiers), the second of each is
 * "warm", which is what a deployed mesh serving one job after another does. Both ratios are
 * reported.
 */
async function measureSetup(setup: Setup) {
  log(`${setup}: seeding ${RECORDS} records, ${KEYS} keys, then the job, twice`);
  const { run, again, seedMs, sqliteFile } = await meshRun(setup, { records: RECORDS, again: true });
  log(`${setup}: again ${again!.wallMs} ms; its plain loop, twice`);
  const plainLoop = async () => (sqliteFile ? sqlitePlainLoop(sqliteFile) : mariadbPlainLoop());
  const { exactWallMs: coldWallMs, ...cold } = await plainLoop();
  const { exactWallMs: warmWallMs, ...warm } = await plainLoop();
  log(`${setup} plain loop: ${cold.wallMs} ms, again ${warm.wallMs} ms`);
  for (const p of [cold, warm]) if (p.records !== run.records) throw new Error(`the ${setup} plain loop signed ${p.records} records, the mesh ${run.records}`);
  const ratio = (mesh: JobRun, wallMs: number) => Number((mesh.wallMs / wallMs).toFixed(3));
  return {
    ratio: ratio(run, coldWallMs),
    ratioWarm: ratio(again!, warmWallMs),
    section: {
      mesh: { about: ABOUT[setup].mesh, ...run, seedMs, coresNeededInPlainLoopTime: coresNeeded(run, coldWallMs) },
      meshWarm: { about: "the same job again on the same processes (warm)", ...again!, coresNeededInPlainLoopTime: coresNeeded(again!, warmWallMs) },
      plainLoop: { about: ABOUT[setup].plainLoop, ...cold },
      plainLoopWarm: { about: "the same plain loop again in the same process (warm)", ...warm },
    },
  };
}

/** One setup's measurements: its two ratios, and its section of the JSON (two jobs, two plain loops). */
type Measured = Awaited<ReturnType<typeof measureSetup>>;

/**
 * One setup's rounds as one measurement: the cold side (ratio, runs) of the round with the
 * median cold ratio, the warm side of the round with the median warm ratio (the upper median
 * of an even count). One round is itself.
 */
function medianRound(ms: readonly Measured[]): Measured {
  const median = (key: "ratio" | "ratioWarm") => [...ms].sort((a, b) => a[key] - b[key])[Math.floor(ms.length / 2)]!;
  const cold = median("ratio");
  const warm = median("ratioWarm");
  return {
    ratio: cold.ratio,
    ratioWarm: warm.ratioWarm,
    section: { mesh: cold.section.mesh, plainLoop: cold.section.plainLoop, meshWarm: warm.section.meshWarm, plainLoopWarm: warm.section.plainLoopWarm },
  };
}

/**
 * The cores the mesh's CPU time (keymesh processes and MariaDB) would keep busy if it had to
 * finish in the plain loop's wall time: above the machine's cores, no scheduling can make the
 * mesh as fast as the plain loop, and the CPU time itself has to shrink.
 */
function coresNeeded(run: JobRun, plainLoopWallMs: number): number {
  return Number((meshCpuMs(run) / plainLoopWallMs).toFixed(2));
}

/** A job's CPU time: every keymesh process's, and MariaDB's when it ran on MariaDB. */
function meshCpuMs(run: JobRun): number {
  return run.cpuMs.allKeymeshProcesses + ((run.cpuMs.mariadb as number | undefined) ?? 0);
}

/** An OTLP/HTTP sink that accepts and drops spans, so tracing costs what exporting costs. */
async function startSink() {
  let spans = 0;
  const server = createServer((req, res) => {
    req.on("data", () => undefined);
    req.on("end", () => {
      spans++;
      res.writeHead(200, { "content-type": "application/x-protobuf" }).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address() as { port: number };
  return { url: `http://127.0.0.1:${port}`, requests: () => spans, close: () => new Promise((r) => server.close(r)) };
}

const MASTER_KEYS = `1:${randomBytes(32).toString("base64")}`;

/** Off, tracing, and tracing + metrics on the split mesh, alternated three times each. */
async function measureTracing() {
  // Medians, because identical runs on this shared machine differ by more than the cost being
  // measured. Metrics as deployed (docker-compose.yml, deploy/k8s): /metrics on every process,
  // scraped every --scrape-interval-ms, no OTLP metric export.
  const sink = await startSink();
  const tracingEnv = { OTEL_EXPORTER_OTLP_ENDPOINT: sink.url, OTEL_TRACES_SAMPLER: "always_on", OTEL_METRICS_EXPORTER: "none" };
  const wall = { off: [] as number[], on: [] as number[], metrics: [] as number[], both: [] as number[] };
  // CPU time of the keymesh processes (not MariaDB): less sensitive than wall time to
  // other work on the machine, since waiting for a core does not count.
  const cpu = { off: [] as number[], on: [] as number[], metrics: [] as number[], both: [] as number[] };
  const measure = async (which: keyof typeof wall, env: NodeJS.ProcessEnv = {}, metrics = false) => {
    const { run } = await meshRun("split", { records: RECORDS, env, metrics });
    wall[which].push(run.wallMs);
    cpu[which].push(run.cpuMs.allKeymeshProcesses);
  };
  for (let round = 0; round < ROUNDS; round++) {
    log(`tracing off, round ${round + 1}`);
    await measure("off");
    log(`tracing on (always_on), round ${round + 1}`);
    await measure("on", tracingEnv);
    log(`metrics on, round ${round + 1}`);
    await measure("metrics", { OTEL_METRICS_EXPORTER: "none" }, true);
    log(`tracing and metrics on, round ${round + 1}`);
    // As docker-compose.yml runs the stack: spans over OTLP, metrics on /metrics for Prometheus.
    await measure("both", tracingEnv, true);
  }
  await sink.close();
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const overhead = (xs: number[], base: number[]) => Number((((median(xs) - median(base)) / median(base)) * 100).toFixed(1));
  return {
    tracing: {
      onWallMs: wall.on,
      offWallMs: wall.off,
      medianOnMs: median(wall.on),
      medianOffMs: median(wall.off),
      overheadPercent: overhead(wall.on, wall.off),
      exportRequests: sink.requests(),
    },
    metrics: { wallMs: wall.metrics, medianMs: median(wall.metrics), overheadPercent: overhead(wall.metrics, wall.off), scrapeIntervalMs: SCRAPE_INTERVAL_MS },
    tracingAndMetrics: {
      wallMs: wall.both,
      medianMs: median(wall.both),
      overheadPercent: overhead(wall.both, wall.off),
      scrapeIntervalMs: SCRAPE_INTERVAL_MS,
    },
    meshCpuMs: {
      ...cpu,
      overheadPercentTracing: overhead(cpu.on, cpu.off),
      overheadPercentMetrics: overhead(cpu.metrics, cpu.off),
      overheadPercentTracingAndMetrics: overhead(cpu.both, cpu.off),
    },
  };
}

/** The split mesh with 1, 2 and 4 executors, then 10k, 100k and 1M records with one. */
async function measureScaling() {
  const point = (run: JobRun) => ({
    records: run.records,
    wallMs: run.wallMs,
    recordsPerSecond: run.recordsPerSecond,
    executorPeakRssMiB: run.executorRssMiB.map((m) => m.peakMiB),
    ...(run.executorLiveHeapMiB ? { executorLiveHeapMiB: run.executorLiveHeapMiB } : {}),
    batchLatencyMs: run.batchLatencyMs,
    cpuMs: run.cpuMs,
  });
  const byExecutors: unknown[] = [];
  for (const executors of [1, 2, 4]) {
    log(`scaling: ${executors} executors`);
    byExecutors.push({ executors, ...point((await meshRun("split", { records: RECORDS, executors })).run) });
  }
  const byRecords: ReturnType<typeof point>[] = [];
  for (const records of [10_000, 100_000, 1_000_000]) {
    log(`scaling: ${records} records`);
    byRecords.push(point((await meshRun("split", { records })).run));
  }
  const rate = (n: number) => byRecords.find((p) => p.records === n)!.recordsPerSecond;
  return {
    scalingExecutors: byExecutors,
    scalingRecords: {
      points: byRecords,
      // 1.0: a million records go at the pace of 100k; under 1.0, the job slows as it grows.
      linearityRecordsPerSecond1MTo100k: Number((rate(1_000_000) / rate(100_000)).toFixed(3)),
    },
  };
}

/**
 * What one Ed25519 signature costs this machine (µs, `crypto.sign` on one core, the best of
 * three rounds of 20,000): the work neither the mesh nor the plain loop can avoid, so the
 * rest of each one's CPU time is what it adds.
 */
function ed25519SignMicros(): number {
  const { privateKey } = generateKeyPairSync("ed25519");
  const payload = randomBytes(64);
  let best = Infinity;
  for (let round = 0; round < 3; round++) {
    const started = performance.now();
    for (let i = 0; i < 20_000; i++) sign(null, payload, privateKey);
    best = Math.min(best, ((performance.now() - started) * 1000) / 20_000);
  }
  return Number(best.toFixed(2));
}

/** The targets (docs/performance.md): each setup at most its plain loop; the stretch, 100k in 2.5 s. */
const TARGET_RATIO = 1;
const STRETCH_WALL_MS = 2500;
const STRETCH_RECORDS = 100_000;
/** Ed25519 on the machine the stretch was set on (µs per signature). */
const STRETCH_SIGN_MICROS = 36;

/**
 * Each target, met or not, and what stands in its way in the run's own measurements: the CPU
 * every side spends beyond the Ed25519 signatures (records × the machine's cost of one), and
 * the shortest wall time the mesh's CPU allows on this machine's cores (all of them busy all
 * the time). A mesh whose lower bound is above its plain loop cannot reach the target by
 * scheduling; its CPU time has to shrink.
 */
function targetsOf(measured: Record<string, Measured>, signMicros: number, cores: number) {
  const targets: Record<string, unknown> = {};
  let fastest: { setup: string; wallMs: number } | undefined;
  for (const [name, { section: s, ratio: coldRatio, ratioWarm }] of Object.entries(measured)) {
    const ed25519CpuMs = Math.round((s.mesh.records * signMicros) / 1000);
    const plainCpu = (run: typeof s.plainLoop) => Object.values(run.cpuMs).reduce((a, b) => a + b, 0);
    const side = (ratio: number, mesh: JobRun, plain: typeof s.plainLoop) => ({
      ratio,
      meshCpuBeyondEd25519Ms: meshCpuMs(mesh) - ed25519CpuMs,
      plainLoopCpuBeyondEd25519Ms: plainCpu(plain) - ed25519CpuMs,
      meshLowerBoundWallMs: Math.round(meshCpuMs(mesh) / cores),
      plainLoopWallMs: plain.wallMs,
    });
    const cold = side(coldRatio, s.mesh, s.plainLoop);
    const warm = side(ratioWarm, s.meshWarm, s.plainLoopWarm);
    const judged = REPEAT > 1 ? `, judged on the median of ${REPEAT} rounds` : "";
    targets[name] = { target: `≤ ${TARGET_RATIO}× its plain loop, cold and warm${judged}`, met: cold.ratio <= TARGET_RATIO && warm.ratio <= TARGET_RATIO, ed25519CpuMs, cold, warm };
    if (s.mesh.records === STRETCH_RECORDS) {
      for (const run of [s.mesh, s.meshWarm]) if (!fastest || run.wallMs < fastest.wallMs) fastest = { setup: name, wallMs: run.wallMs };
    }
  }
  if (fastest) {
    // The issue set 2.5 s on a machine whose Ed25519 took about 36 µs (27,500 signatures a
    // second): on a faster machine the same work takes less, so the target is met only under
    // the time scaled to this machine's signatures, not merely under 2.5 s.
    const scaledMs = Math.round((STRETCH_WALL_MS * Math.min(signMicros, STRETCH_SIGN_MICROS)) / STRETCH_SIGN_MICROS);
    targets.stretch = {
      target: `${STRETCH_RECORDS} records in ≤ ${STRETCH_WALL_MS} ms where Ed25519 takes ${STRETCH_SIGN_MICROS} µs: ${scaledMs} ms on this machine`,
      met: fastest.wallMs <= scaledMs,
      fastest,
      scaledToThisMachineMs: scaledMs,
    };
  }
  return targets;
}

async function main() {
  const os = await import("node:os");
  const signMicros = ed25519SignMicros();
  const result: Record<string, unknown> = {
    machine: { cpus: os.cpus().length, node: process.version, ed25519SignMicros: signMicros, loadAverage1mAtStart: Number(os.loadavg()[0]!.toFixed(2)) },
    job: { records: RECORDS, keys: KEYS, batchSize: BATCH, concurrency: CONCURRENCY, leaseTtlMs: LEASE_TTL_MS, setups: ONLY },
  };
  const measured: Record<string, Measured> = {};
  try {
    const rounds = new Map<Setup, Measured[]>(ONLY.map((setup) => [setup, []]));
    for (let round = 1; round <= REPEAT; round++) {
      if (REPEAT > 1) log(`round ${round} of ${REPEAT}`);
      for (const setup of ONLY) rounds.get(setup)!.push(await measureSetup(setup));
    }
    for (const setup of ONLY) {
      const m = medianRound(rounds.get(setup)!);
      result[KEYS_OF[setup].ratio] = m.ratio;
      result[`${KEYS_OF[setup].ratio}Warm`] = m.ratioWarm;
      measured[KEYS_OF[setup].section] = m;
    }
    if (REPEAT > 1) {
      result.rounds = Object.fromEntries(
        ONLY.map((setup) => {
          const ms = rounds.get(setup)!;
          return [KEYS_OF[setup].section, { cold: ms.map((m) => m.ratio), warm: ms.map((m) => m.ratioWarm), wallMs: ms.map((m) => [m.section.mesh.wallMs, m.section.meshWarm.wallMs]), plainLoopWallMs: ms.map((m) => [m.section.plainLoop.wallMs, m.section.plainLoopWarm.wallMs]) }];
        }),
      );
    }
    for (const [name, m] of Object.entries(measured)) result[name] = m.section;
    result.targets = targetsOf(measured, signMicros, os.cpus().length);
    if (values.tracing) Object.assign(result, await measureTracing());
    if (values.scale) Object.assign(result, await measureScaling());
  } finally {
    for (const dir of dataDirs) rmSync(dir, { recursive: true, force: true });
  }
  (result.machine as Record<string, unknown>).loadAverage1mAtEnd = Number(os.loadavg()[0]!.toFixed(2));
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
}

await main();
