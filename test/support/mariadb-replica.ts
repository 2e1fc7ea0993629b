import { spawn, type ChildProcess } from "node:child_process";
import { cpSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir, userInfo } from "node:os";
import { join } from "node:path";
import { createConnection, type Connection } from "mysql2/promise";
import { freePort } from "./redis-nodes.js";

/**
 * A MariaDB primary and a replica of it, both our own `mariadbd` processes on free loopback
 * ports with data directories in a temp dir (the shared test server's configuration is never
 * touched). The primary writes a binary log; the replica follows it by GTID. The replica is
 * reached as `reader`, a user with SELECT only, so anything keymesh sends to the replica
 * connection that is not a read fails loudly.
 */
export interface ReplicatedPair {
  /** mysql://root@127.0.0.1:<primary>/<db> */
  readonly primaryUrl: string;
  /** mysql://reader:…@127.0.0.1:<replica>/<db> */
  readonly replicaUrl: string;
  /** SELECT statements the replica has served to clients so far. */
  replicaSelects(): Promise<number>;
  /** Stops applying the primary's changes on the replica (simulated lag). */
  pause(): Promise<void>;
  /** Resumes replication and waits until the replica has applied everything the primary wrote. */
  resumeAndCatchUp(timeoutMs?: number): Promise<void>;
  close(): Promise<void>;
}

const DB = "keymesh";
const READER_PASSWORD = "reader-only-0123";

async function startServer(dir: string, port: number, serverId: number, extra: string[]): Promise<ChildProcess> {
  const child = spawn(
    "mariadbd",
    [
      "--no-defaults",
      `--user=${userInfo().username}`,
      `--datadir=${join(dir, "data")}`,
      `--port=${port}`,
      "--bind-address=127.0.0.1",
      `--socket=${join(dir, "sock")}`,
      `--pid-file=${join(dir, "pid")}`,
      `--server-id=${serverId}`,
      "--skip-name-resolve",
      "--innodb-buffer-pool-size=32M",
      "--innodb-log-file-size=16M",
      ...extra,
    ],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  let err = "";
  child.stderr!.on("data", (d: Buffer) => (err = (err + d.toString()).slice(-4000)));
  const deadline = Date.now() + 60_000;
  for (;;) {
    try {
      const c = await createConnection({ host: "127.0.0.1", port, user: "root", connectTimeout: 1_000 });
      await c.end();
      return child;
    } catch {
      if (child.exitCode !== null || Date.now() > deadline) {
        child.kill("SIGKILL");
        throw new Error(`mariadbd on port ${port} did not start:\n${err}`);
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

function install(dir: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const p = spawn(
      "mariadb-install-db",
      ["--no-defaults", `--datadir=${join(dir, "data")}`, "--auth-root-authentication-method=normal", "--skip-test-db", `--user=${userInfo().username}`],
      { stdio: "ignore" },
    );
    p.once("error", reject);
    p.once("exit", (code) => (code === 0 ? resolve() : reject(new Error(`mariadb-install-db exited with ${code}`))));
  });
}

function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once("exit", () => resolve());
    child.kill("SIGTERM");
    setTimeout(() => child.kill("SIGKILL"), 10_000).unref();
  });
}

/** Starts a primary and a replica; fails (never skips) when mariadbd is not installed. */
export async function startReplicatedPair(): Promise<ReplicatedPair> {
  const root = mkdtempSync(join(tmpdir(), "keymesh-repl-"));
  const pdir = join(root, "primary");
  const rdir = join(root, "replica");
  const children: ChildProcess[] = [];
  const conns: Connection[] = [];
  try {
    await install(pdir);
    // The replica starts from the same empty data directory, then follows the binary log.
    cpSync(pdir, rdir, { recursive: true });
    const [pport, rport] = [await freePort(), await freePort()];
    children.push(await startServer(pdir, pport, 1, [`--log-bin=${join(pdir, "binlog")}`, "--binlog-format=ROW"]));
    children.push(await startServer(rdir, rport, 2, ["--read-only", `--relay-log=${join(rdir, "relay")}`]));
    const primary = await createConnection({ host: "127.0.0.1", port: pport, user: "root", multipleStatements: true });
    const replica = await createConnection({ host: "127.0.0.1", port: rport, user: "root", multipleStatements: true });
    conns.push(primary, replica);
    await replica.query(
      `CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=${pport}, MASTER_USER='root', MASTER_PASSWORD='', MASTER_USE_GTID=slave_pos; START SLAVE`,
    );
    await primary.query(
      `CREATE DATABASE ${DB} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
       CREATE USER 'reader'@'127.0.0.1' IDENTIFIED BY '${READER_PASSWORD}';
       GRANT SELECT ON ${DB}.* TO 'reader'@'127.0.0.1'`,
    );

    const caughtUp = async (timeoutMs: number) => {
      const [[p]] = (await primary.query("SELECT @@gtid_binlog_pos AS pos")) as unknown as [[{ pos: string }]];
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const [[r]] = (await replica.query("SELECT @@gtid_slave_pos AS pos")) as unknown as [[{ pos: string }]];
        if (r.pos === p.pos) return;
        if (Date.now() > deadline) throw new Error(`replica at ${r.pos}, primary at ${p.pos}`);
        await new Promise((res) => setTimeout(res, 50));
      }
    };
    await caughtUp(30_000);

    return {
      primaryUrl: `mysql://root@127.0.0.1:${pport}/${DB}`,
      replicaUrl: `mysql://reader:${READER_PASSWORD}@127.0.0.1:${rport}/${DB}`,
      async replicaSelects() {
        const [[row]] = (await replica.query("SHOW GLOBAL STATUS LIKE 'Com_select'")) as unknown as [[{ Value: string }]];
        return Number(row.Value);
      },
      async pause() {
        await replica.query("STOP SLAVE");
      },
      async resumeAndCatchUp(timeoutMs = 30_000) {
        await replica.query("START SLAVE");
        await caughtUp(timeoutMs);
      },
      async close() {
        for (const c of conns) await c.end().catch(() => undefined);
        for (const c of children) await stop(c);
        rmSync(root, { recursive: true, force: true });
      },
    };
  } catch (err) {
    for (const c of conns) await c.end().catch(() => undefined);
    for (const c of children) await stop(c);
    rmSync(root, { recursive: true, force: true });
    throw err;
  }
}
