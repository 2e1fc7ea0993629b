/**
 * `npm run bench:signing`: the signing pipeline's reference run and its scaling, printed as
 * JSON. Every service runs in its own process against MariaDB and one Redis, like a
 * deployment; the reference loop runs in this process on the same records.
 *
 *   npm run bench:signing                      # 100k records, 100 keys, batch 1000
 *   npm run bench:signing -- --tracing         # also off / tracing / tracing + metrics, three rounds
 *   npm run bench:signing -- --scale           # also 10k/1M records, 1/2/4 executors, tracing on/off
 *   npm run bench:signing -- --records 20000   # a quicker run
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createServer } from "node:http";
import { parseArgs } from "node:util";
import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import knex, { type Knex } from "knex";
import { CollectionService } from "../gen/keymesh/collection/v1/collection_service_pb.js";
import { ExecutorService } from "../gen/keymesh/executor/v1/executor_service_pb.js";
import { KeyManagementService } from "../gen/keymesh/keys/v1/key_management_service_pb.js";
import { execFileSync } from "node:child_process";
import { cpuMsOf, freePort, runKeymesh, startServe, type MeshProcess } from "./mesh-processes.js";
import { referenceLoop } from "./reference.js";
import { ensureRootToken } from "../services/shared/root-token.js";

const { values } = parseArgs({
  options: {
    records: { type: "string", default: "100000" },
    keys: { type: "string", default: "100" },
    "batch-size": { type: "string", default: "1000" },
    concurrency: { type: "string", default: "8" },
    scale: { type: "boolean", default: false },
    tracing: { type: "boolean", default: false },
    "mysql-url": { type: "string", default: process.env.KEYMESH_BENCH_MYSQL_URL ?? "mysql://root@127.0.0.1:3306" },
    "redis-url": { type: "string", default: process.env.KEYMESH_BENCH_REDIS_URL ?? "redis://127.0.0.1:6379" },
  },
});
const RECORDS = Number(values.records);
const KEYS = Number(values.keys);
const BATCH = Number(values["batch-size"]);
const CONCURRENCY = Number(values.concurrency);
// KEYMESH_BENCH_DATABASE picks another name, so that two benches on one server do not collide.
const DB_NAME = process.env.KEYMESH_BENCH_DATABASE ?? "keymesh_bench";

const log = (msg: string) => process.stderr.write(`bench: ${msg}\n`);

interface Mesh {
  procs: MeshProcess[];
  executors: MeshProcess[];
  collection: Client<typeof CollectionService>;
  keys: Client<typeof KeyManagementService>;
  executorClients: Client<typeof ExecutorService>[];
  /** The processes' /metrics URLs (empty unless started with metrics). */
  metricsUrls: string[];
  stop(): Promise<void>;
}

async function recreateDatabase(): Promise<void> {
  const admin = knex({ client: "mysql2", connection: values["mysql-url"] });
  await admin.raw(`DROP DATABASE IF EXISTS \`${DB_NAME}\``);
  await admin.raw(`CREATE DATABASE \`${DB_NAME}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin`);
  await admin.destroy();
}

/**
 * Starts keys, collection, signing and `executors` executor processes, each on its own port.
 * With `metrics`, each also serves /metrics on a port of its own (KEYMESH_METRICS_PORT), and the
 * bench scrapes them every second while a job runs.
 */
async function startMesh(executors: number, extraEnv: NodeJS.ProcessEnv = {}, metrics = false): Promise<Mesh> {
  const ports = { keys: await freePort(), collection: await freePort(), signing: await freePort() };
  // Every process runs with --dev on one data directory: the bench drives the mesh as root,
  // and the services call each other with a service token, as a deployment does.
  const dataDir = mkdtempSync(join(tmpdir(), "keymesh-bench-"));
  const rootToken = ensureRootToken(dataDir).token;
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    KEYMESH_DATABASE_URL: `${values["mysql-url"]}/${DB_NAME}`,
    KEYMESH_REDIS_URL: values["redis-url"],
    KEYMESH_MASTER_KEYS: MASTER_KEYS,
    KEYMESH_KEYS_URL: `http://127.0.0.1:${ports.keys}`,
    KEYMESH_COLLECTION_URL: `http://127.0.0.1:${ports.collection}`,
    KEYMESH_SIGNING_URL: `http://127.0.0.1:${ports.signing}`,
    KEYMESH_LOG_LEVEL: "warn",
    KEYMESH_DATA_DIR: dataDir,
    KEYMESH_SERVICE_TOKEN: randomBytes(24).toString("base64url"),
    ...extraEnv,
  };
  await runKeymesh(["migrate"], env);
  // KEYMESH_BENCH_PROFILE_DIR=<dir> writes a V8 CPU profile of every service process there.
  const profile = process.env.KEYMESH_BENCH_PROFILE_DIR;
  const nodeArgs = profile ? ["--cpu-prof", `--cpu-prof-dir=${profile}`] : [];
  const metricsUrls: string[] = [];
  const envOf = async () => {
    if (!metrics) return env;
    const port = await freePort();
    metricsUrls.push(`http://127.0.0.1:${port}/metrics`);
    return { ...env, KEYMESH_METRICS_PORT: String(port) };
  };
  const procs = await Promise.all([
    startServe(["keys"], ports.keys, await envOf(), nodeArgs),
    startServe(["collection"], ports.collection, await envOf(), nodeArgs),
    startServe(["signing"], ports.signing, await envOf(), nodeArgs),
  ]);
  const executorProcs = await Promise.all(Array.from({ length: executors }, async () => startServe(["executor"], await freePort(), await envOf(), nodeArgs)));
  const client = <S extends Parameters<typeof createClient>[0]>(desc: S, url: string) =>
    createClient(desc, createGrpcTransport({ baseUrl: url, acceptCompression: [], interceptors: [bearer(rootToken)] })) as Client<S>;
  return {
    procs: [...procs, ...executorProcs],
    executors: executorProcs,
    collection: client(CollectionService, procs[1]!.url),
    keys: client(KeyManagementService, procs[0]!.url),
    executorClients: executorProcs.map((p) => client(ExecutorService, p.url)),
    metricsUrls,
    async stop() {
      await Promise.all([...procs, ...executorProcs].map((p) => p.stop()));
    },
  };
}

function bearer(token: string): Interceptor {
  return (next) => (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
}

function mariadbPid(): number | undefined {
  try {
    return Number(execFileSync("pgrep", ["-x", "mariadbd"]).toString().trim().split("\n")[0]);
  } catch {
    return undefined;
  }
}

/** Runs one job over every unsigned record with all executors of the mesh; returns timings. */
async function runJob(mesh: Mesh, batchSize: number) {
  await quiesce();
  const dbPid = mariadbPid();
  const cpuBefore = [...mesh.procs.map((p) => p.cpuMs()), dbPid ? cpuMsOf(dbPid) : 0];
  const started = performance.now();
  // Scraped like a Prometheus with a 1 s interval (15 s is the usual one): the worst case.
  let scrapes = 0;
  const scraper = setInterval(() => {
    for (const u of mesh.metricsUrls) void fetch(u).then((r) => r.text()).then(() => scrapes++, () => undefined);
  }, 1000);
  let jobId = "";
  const first = (async () => {
    let last;
    for await (const res of mesh.executorClients[0]!.runJob({ spec: { batchSize, concurrency: CONCURRENCY, leaseTtlMs: 30_000 }, progressIntervalMs: 200 })) {
      last = res.progress;
      jobId ||= last?.jobId ?? "";
    }
    return last;
  })();
  while (!jobId && mesh.executorClients.length > 1) await new Promise((r) => setTimeout(r, 10));
  const joiners = mesh.executorClients.slice(1).map(async (c) => {
    for await (const _ of c.runJob({ jobId, spec: { concurrency: CONCURRENCY, leaseTtlMs: 30_000 } })) void _;
  });
  const [last] = await Promise.all([first, ...joiners]).finally(() => clearInterval(scraper));
  const wallMs = performance.now() - started;
  if (!last || Number(last.signedRecords) !== Number(last.totalRecords)) throw new Error(`job did not finish: ${JSON.stringify(last, (_, v) => (typeof v === "bigint" ? Number(v) : v))}`);
  const cpuAfter = [...mesh.procs.map((p) => p.cpuMs()), dbPid ? cpuMsOf(dbPid) : 0];
  const cpu = cpuAfter.map((c, i) => c - cpuBefore[i]!);
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
    cpuMs: {
      keys: cpu[0],
      collection: cpu[1],
      signing: cpu[2],
      executors: cpu.slice(3, 3 + mesh.executors.length),
      mariadb: cpu[cpu.length - 1],
    },
  };
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

async function resetSignatures(db: Knex) {
  await db("signatures").del();
  await db("records").update({ signed: 0, claim_id: null, claim_expires_at: 0 });
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

async function main() {
  await recreateDatabase();
  const db = knex({ client: "mysql2", connection: `${values["mysql-url"]}/${DB_NAME}`, pool: { min: 0, max: 4 } });
  const result: Record<string, unknown> = {
    machine: { cpus: (await import("node:os")).cpus().length, node: process.version },
    reference: { records: RECORDS, keys: KEYS, batchSize: BATCH, concurrency: CONCURRENCY, database: "mariadb", redis: "one node" },
  };
  let mesh = await startMesh(1);
  try {
    log(`seeding ${RECORDS} records, ${KEYS} keys`);
    const seedMs = await seed(mesh, RECORDS, KEYS);
    log("mesh run");
    const run = await runJob(mesh, BATCH);
    log(`mesh: ${run.wallMs} ms; reference loop`);
    await resetSignatures(db);
    await quiesce();
    const dbPid = mariadbPid();
    const refCpu = [process.cpuUsage(), dbPid ? cpuMsOf(dbPid) : 0] as const;
    const ref = await referenceLoop(db, { batchSize: BATCH, keyCount: KEYS });
    const own = process.cpuUsage(refCpu[0]);
    const refCpuMs = { loop: Math.round((own.user + own.system) / 1000), mariadb: (dbPid ? cpuMsOf(dbPid) : 0) - refCpu[1] };
    result.mesh = { ...run, seedMs };
    result.plainLoop = { records: ref.signed, wallMs: Math.round(ref.wallMs), recordsPerSecond: Math.round((ref.signed * 1000) / ref.wallMs), cpuMs: refCpuMs };
    result.ratioMeshToPlainLoop = Number((run.wallMs / ref.wallMs).toFixed(3));

    // Every point starts on a fresh database, so no point pays for the previous one's
    // deleted rows (InnoDB purges them in the background, on the same two cores).
    const fresh = async (executors: number, records: number, env: NodeJS.ProcessEnv = {}, metrics = false) => {
      await mesh.stop();
      await recreateDatabase();
      mesh = await startMesh(executors, env, metrics);
      await seed(mesh, records, KEYS);
      return runJob(mesh, BATCH);
    };
    if (values.scale || values.tracing) {
      // Off, tracing, and tracing + metrics (OTLP export every 5 s and /metrics scraped every
      // second), alternated three times each; medians, because identical runs on this shared
      // machine differ by more than the cost being measured.
      const sink = await startSink();
      const tracingEnv = { OTEL_EXPORTER_OTLP_ENDPOINT: sink.url, OTEL_TRACES_SAMPLER: "always_on", OTEL_METRICS_EXPORTER: "none" };
      const on: number[] = [];
      const off: number[] = [];
      const both: number[] = [];
      // CPU time of the keymesh processes (not MariaDB): less sensitive than wall time to
      // other work on the machine, since waiting for a core does not count.
      const cpu = { off: [] as number[], on: [] as number[], both: [] as number[] };
      const meshCpu = (r: Awaited<ReturnType<typeof runJob>>) =>
        r.cpuMs.keys! + r.cpuMs.collection! + r.cpuMs.signing! + r.cpuMs.executors.reduce((a, b) => a! + b!, 0)!;
      const measure = async (wall: number[], cpuMs: number[], env: NodeJS.ProcessEnv = {}, metrics = false) => {
        const r = await fresh(1, RECORDS, env, metrics);
        wall.push(r.wallMs);
        cpuMs.push(meshCpu(r));
      };
      for (let round = 0; round < 3; round++) {
        log(`tracing off, round ${round + 1}`);
        await measure(off, cpu.off);
        log(`tracing on (always_on), round ${round + 1}`);
        await measure(on, cpu.on, tracingEnv);
        log(`tracing and metrics on, round ${round + 1}`);
        await measure(both, cpu.both, { ...tracingEnv, OTEL_METRICS_EXPORTER: "otlp", OTEL_METRIC_EXPORT_INTERVAL: "5000" }, true);
      }
      const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
      const overhead = (xs: number[]) => Number((((median(xs) - median(off)) / median(off)) * 100).toFixed(1));
      result.tracing = {
        onWallMs: on,
        offWallMs: off,
        medianOnMs: median(on),
        medianOffMs: median(off),
        overheadPercent: overhead(on),
        exportRequests: sink.requests(),
      };
      result.tracingAndMetrics = { wallMs: both, medianMs: median(both), overheadPercent: overhead(both) };
      const cpuOverhead = (xs: number[]) => Number((((median(xs) - median(cpu.off)) / median(cpu.off)) * 100).toFixed(1));
      result.meshCpuMs = { ...cpu, overheadPercentTracing: cpuOverhead(cpu.on), overheadPercentTracingAndMetrics: cpuOverhead(cpu.both) };
      await sink.close();
    }
    if (values.scale) {
      const byExecutors: unknown[] = [];
      for (const executors of [1, 2, 4]) {
        log(`scaling: ${executors} executors`);
        byExecutors.push({ executors, ...(await fresh(executors, RECORDS)) });
      }
      result.scalingExecutors = byExecutors;

      const byRecords: unknown[] = [];
      for (const n of [10_000, 100_000, 1_000_000]) {
        log(`scaling: ${n} records`);
        byRecords.push(await fresh(1, n));
      }
      result.scalingRecords = byRecords;
    }
  } finally {
    await mesh.stop();
    await db.destroy();
  }
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
}

await main();
