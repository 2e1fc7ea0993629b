import { randomBytes } from "node:crypto";
import { createConnection } from "mysql2/promise";

/**
 * Throwaway MariaDB/MySQL databases for integration tests.
 *
 * Each test file creates its own database (`keymesh_t_<random>`) on the server named by
 * KEYMESH_TEST_MYSQL_URL (default: the development server, root with no password) and drops
 * it afterwards, so files can run in parallel. A server that cannot be reached makes the
 * test fail: integration tests are never skipped.
 */

/** The server's admin URL; its path names a database that already exists. */
export function testMysqlUrl(): string {
  return process.env.KEYMESH_TEST_MYSQL_URL ?? "mysql://root@127.0.0.1:3306/test";
}

/** A database created for one test file. */
export interface TestDatabase {
  /** Its name, `keymesh_t_<hex>`. */
  readonly name: string;
  /** `mysql://…/<name>`, ready for `createDatabase({ url })`. */
  readonly url: string;
  /** Drops the database; safe to call more than once. */
  drop(): Promise<void>;
}

async function admin(sql: string): Promise<void> {
  const u = new URL(testMysqlUrl());
  let conn;
  try {
    conn = await createConnection({
      host: u.hostname,
      port: u.port === "" ? 3306 : Number(u.port),
      user: decodeURIComponent(u.username) || "root",
      password: decodeURIComponent(u.password),
      connectTimeout: 5_000,
    });
  } catch (err) {
    throw new Error(
      `MariaDB/MySQL is not reachable at ${u.host} (set KEYMESH_TEST_MYSQL_URL); integration tests need it`,
      { cause: err },
    );
  }
  try {
    await conn.query(sql);
  } finally {
    await conn.end();
  }
}

/** Creates a fresh, empty database and returns how to reach and drop it. */
export async function createTestDatabase(prefix = "keymesh_t_"): Promise<TestDatabase> {
  if (!/^[A-Za-z0-9_]+$/.test(prefix)) throw new Error(`bad database name prefix ${prefix}`);
  const name = `${prefix}${randomBytes(6).toString("hex")}`;
  await admin(`CREATE DATABASE \`${name}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin`);
  const url = new URL(testMysqlUrl());
  url.pathname = `/${name}`;
  let dropped = false;
  return {
    name,
    url: url.toString(),
    async drop() {
      if (dropped) return;
      dropped = true;
      await admin(`DROP DATABASE IF EXISTS \`${name}\``);
    },
  };
}
