import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { Health } from "../gen/grpc/health/v1/health_pb.js";
import { VaultService } from "../gen/keymesh/vault/v1/vault_service_pb.js";
import { createTestDatabase } from "../test/support/mysql.js";
import { ensureRootToken } from "../services/shared/root-token.js";
import { bearer, cpuMsOf, freePort, runKeymesh, startServe } from "./mesh-processes.js";

/**
 * `npm run bench:vault`: create and fetch throughput and latency of VaultService over gRPC
 * (HTTP/2), with the vault in its own process on MariaDB and the audit trail on (every call
 * writes its event before replying). For each concurrency (1, 16, 64 clients, each on its
 * own HTTP/2 connection, one call at a time) it runs creates, then fetches of random secrets,
 * each for a fixed time after a warm-up, and prints one JSON summary.
 */

const { values: args } = parseArgs({
  options: {
    seconds: { type: "string", default: "5" },
    warmup: { type: "string", default: "1" },
    clients: { type: "string", default: "1,16,64" },
    "value-bytes": { type: "string", default: "256" },
  },
});
const SECONDS = Number(args.seconds);
const WARMUP = Number(args.warmup);
const CONCURRENCY = args.clients.split(",").map(Number);
const VALUE_BYTES = Number(args["value-bytes"]);

interface PhaseResult {
  clients: number;
  ops: number;
  errors: number;
  throughputPerSec: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  serverCpuPercent: number;
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return 0;
  return Math.round(sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]! * 1000) / 1000;
}

async function phase<C>(clients: C[], op: (c: C) => Promise<unknown>, serverPid: number): Promise<PhaseResult> {
  const latencies: number[] = [];
  let errors = 0;
  let measuring = false;
  let stop = false;
  const loops = clients.map(async (c) => {
    while (!stop) {
      const t0 = performance.now();
      try {
        await op(c);
        if (measuring) latencies.push(performance.now() - t0);
      } catch {
        if (measuring) errors++;
      }
    }
  });
  await new Promise((r) => setTimeout(r, WARMUP * 1000));
  measuring = true;
  const cpu0 = cpuMsOf(serverPid);
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, SECONDS * 1000));
  measuring = false;
  const elapsed = performance.now() - t0;
  const cpu = cpuMsOf(serverPid) - cpu0;
  stop = true;
  await Promise.all(loops);
  const sorted = Float64Array.from(latencies).sort();
  return {
    clients: clients.length,
    ops: latencies.length,
    errors,
    throughputPerSec: Math.round((latencies.length / elapsed) * 1000),
    p50Ms: percentile(sorted, 50),
    p99Ms: percentile(sorted, 99),
    maxMs: percentile(sorted, 100),
    serverCpuPercent: Math.round((cpu / elapsed) * 100),
  };
}

/**
 * The database's own floor for one fetch at concurrency 1: a primary-key SELECT plus a
 * one-row INSERT (what a fetch and its audit event cost at minimum), straight over mysql2.
 */
async function databaseFloor(url: string): Promise<{ selectP50Ms: number; insertP50Ms: number }> {
  const { createConnection } = await import("mysql2/promise");
  const u = new URL(url);
  const conn = await createConnection({ host: u.hostname, port: Number(u.port || 3306), user: decodeURIComponent(u.username) || "root", password: decodeURIComponent(u.password), database: u.pathname.slice(1) });
  try {
    const time = async (sql: string, params: unknown[]) => {
      const t: number[] = [];
      for (let i = 0; i < 100; i++) {
        const t0 = performance.now();
        await conn.query(sql, params);
        t.push(performance.now() - t0);
      }
      return percentile(Float64Array.from(t).sort(), 50);
    };
    const selectP50Ms = await time("SELECT id FROM secrets WHERE id = ?", ["00000000-0000-4000-8000-000000000000"]);
    const insertP50Ms = await time(
      "INSERT INTO audit_events (time_ms, principal, peer, method, outcome, code, object_kind, object_hmac, version) VALUES (?, 'bench', '', 'floor', 'ok', 'ok', '', '', 0)",
      [Date.now()],
    );
    return { selectP50Ms, insertP50Ms };
  } finally {
    await conn.end();
  }
}

async function main(): Promise<void> {
  const mysql = await createTestDatabase("keymesh_bench_");
  const dataDir = mkdtempSync(join(tmpdir(), "keymesh-bench-vault-"));
  const env = { ...process.env, KEYMESH_DATABASE_URL: mysql.url, KEYMESH_DATA_DIR: dataDir, KEYMESH_LOG_LEVEL: "warn" };
  await runKeymesh(["migrate"], env);
  const server = await startServe(["vault"], await freePort(), env);
  // `serve --dev` accepts the development root token of its data directory: the bench is root.
  const credentials = [bearer(ensureRootToken(dataDir).token)];
  const value = randomBytes(VALUE_BYTES);
  const results: { create: PhaseResult[]; fetch: PhaseResult[] } = { create: [], fetch: [] };
  try {
    const maxClients = Math.max(...CONCURRENCY);
    const all: Client<typeof VaultService>[] = Array.from({ length: maxClients }, () => createClient(VaultService, createGrpcTransport({ baseUrl: server.url, interceptors: credentials })));
    // A pool of secrets to fetch, created up front.
    const ids: string[] = [];
    for (let i = 0; i < 50; i++) {
      const batch = await Promise.all(all.slice(0, 20).map((c) => c.createSecret({ value })));
      ids.push(...batch.map((r) => r.secret!.secretId));
    }
    for (const n of CONCURRENCY) {
      const clients = all.slice(0, n);
      results.create.push(await phase(clients, (c) => c.createSecret({ value }), server.pid));
      results.fetch.push(
        await phase(clients, (c) => c.getSecret({ selector: { case: "secretId", value: ids[Math.floor(Math.random() * ids.length)]! } }), server.pid),
      );
    }
    // The same server's cost of a bare RPC (health check: no database, no audit), measured the
    // same way at the largest concurrency, separates the RPC stack from the vault's own work.
    const health = Array.from({ length: maxClients }, () => createClient(Health, createGrpcTransport({ baseUrl: server.url })));
    const rpcFloor = await phase(health, (c) => c.check({ service: "" }), server.pid);
    const sixteen = results.fetch.find((r) => r.clients === 16);
    const summary = {
      bench: "vault",
      transport: "gRPC over HTTP/2 (h2c), one connection per client",
      database: "MariaDB (innodb_flush_log_at_trx_commit as configured on the server)",
      audit: "on: every call writes its audit event (grouped multi-row inserts) before replying",
      valueBytes: VALUE_BYTES,
      secondsPerPhase: SECONDS,
      cpus: (await import("node:os")).cpus().length,
      loadAverageAtEnd: loadavg().map((l) => Math.round(l * 100) / 100),
      serverPeakMiB: server.memory().peakMiB,
      databaseFloor: await databaseFloor(mysql.url),
      rpcFloor,
      create: results.create,
      fetch: results.fetch,
      target: {
        fetchesPerSecAt16: 10_000,
        p99MsAt16: 5,
        met: sixteen !== undefined && sixteen.throughputPerSec >= 10_000 && sixteen.p99Ms <= 5,
      },
    };
    process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
  } finally {
    await server.stop();
    await mysql.drop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

await main();
