import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Knex } from "knex";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createDatabase, type Database } from "../shared/storage/database.js";
import { migrate } from "../shared/storage/migrate.js";
import { createJobStore } from "./job-store.js";
import { executorMigrations } from "./migrations/index.js";

let db: Database;
beforeAll(async () => {
  db = createDatabase({ dataDir: mkdtempSync(join(tmpdir(), "keymesh-jobs-")) });
  await migrate(db, executorMigrations);
});
afterAll(() => db?.close());

/** mysql2's error when the server closed the connection under a query. */
const connectionLost = () => Object.assign(new Error("Connection lost: The server closed the connection."), { code: "PROTOCOL_CONNECTION_LOST", fatal: true });

/** `db` whose next `failures` updates of `jobs` fail with `error()` before reaching the database. */
function failingUpdates(failures: number, error: () => Error): { db: Database; attempts: () => number } {
  let attempts = 0;
  const primary = ((table: string) => {
    const builder = db.primary(table);
    const update = builder.update.bind(builder) as (...args: unknown[]) => unknown;
    (builder as unknown as { update: (...args: unknown[]) => unknown }).update = (...args) => {
      attempts++;
      return attempts <= failures ? Promise.reject(error()) : update(...args);
    };
    return builder;
  }) as unknown as Knex;
  return { db: { ...db, primary }, attempts: () => attempts };
}

const job = (id: string) => ({ id, batchSize: 10, concurrency: 1, leaseTtlMs: 1000, createdAt: Date.now(), traceId: null });

describe("job store", () => {
  it("records a job's end even when the database drops the connection on the way", async () => {
    await createJobStore(db).create(job("job-lost"));
    const flaky = failingUpdates(2, connectionLost);
    await createJobStore(flaky.db).finish("job-lost", "succeeded", 42);
    expect(flaky.attempts()).toBe(3);
    expect(await createJobStore(db).get("job-lost")).toMatchObject({ state: "succeeded", finishedAt: 42, error: null });
  });

  it("gives up on an error that is not the database being away, and leaves the job running", async () => {
    await createJobStore(db).create(job("job-bad"));
    const broken = failingUpdates(1, () => new Error("no such column: state"));
    await expect(createJobStore(broken.db).finish("job-bad", "succeeded", 42)).rejects.toThrow(/no such column/);
    expect(broken.attempts()).toBe(1);
    expect((await createJobStore(db).get("job-bad"))?.state).toBe("running");
  });

  it("records the end once: a job that already ended keeps its first outcome", async () => {
    const store = createJobStore(db);
    await store.create(job("job-once"));
    await store.finish("job-once", "succeeded", 1);
    await store.finish("job-once", "failed", 2, "late");
    expect(await store.get("job-once")).toMatchObject({ state: "succeeded", finishedAt: 1, error: null });
  });
});
