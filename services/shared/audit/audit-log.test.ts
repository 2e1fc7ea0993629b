import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createDatabase, type Database } from "../storage/database.js";
import { migrate } from "../storage/migrate.js";
import { auditMigration } from "./migration.js";
import { loadAuditKey } from "./audit-key.js";
import { AuditUnavailableError, createAuditLog } from "./audit-log.js";
import { purgeExpiredAuditEvents } from "./retention.js";

let db: Database;
beforeAll(async () => {
  db = createDatabase({ dataDir: mkdtempSync(join(tmpdir(), "keymesh-audit-")) });
  await migrate(db, [auditMigration]);
});
afterAll(() => db?.close());

const key = Buffer.alloc(32, 7);
const event = (i: number) => ({ principal: "user:alice", peer: "127.0.0.1:1", method: "test/Call", outcome: "ok" as const, object: { kind: "secret", id: `id-${i}` } });

describe("audit log", () => {
  it("groups concurrent events into a few multi-row inserts and stores every one", async () => {
    await db.primary("audit_events").delete();
    const inserts: string[] = [];
    const onQuery = (q: { sql: string }) => {
      if (/^insert into .audit_events/i.test(q.sql)) inserts.push(q.sql);
    };
    db.primary.on("query", onQuery);
    const audit = createAuditLog({ db, key, maxBatch: 500 });
    await Promise.all(Array.from({ length: 1000 }, (_, i) => audit.record(event(i))));
    db.primary.off("query", onQuery);
    expect(Number((await db.primary("audit_events").count({ n: "*" }))[0]!.n)).toBe(1000);
    // 1000 events in one turn of the event loop: two inserts of 500, not a thousand.
    expect(inserts.length).toBeLessThanOrEqual(3);
  });

  it("stores object ids only as keyed HMACs, searchable through the same key", async () => {
    const audit = createAuditLog({ db, key });
    await audit.record({ ...event(0), object: { kind: "secret", id: "the-plain-id" } });
    const dump = JSON.stringify(await db.primary("audit_events").select("*"));
    expect(dump).not.toContain("the-plain-id");
    const found = await audit.list({ limit: 10, objectId: "the-plain-id" });
    expect(found).toHaveLength(1);
    expect(found[0]!.objectHmac).toBe(audit.hmac("the-plain-id"));
    expect(createAuditLog({ db, key: Buffer.alloc(32, 8) }).hmac("the-plain-id")).not.toBe(found[0]!.objectHmac);
  });

  it("rejects every caller of a batch that could not be written", async () => {
    await db.primary.raw("CREATE TRIGGER audit_block BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'blocked'); END");
    try {
      const audit = createAuditLog({ db, key });
      const results = await Promise.allSettled(Array.from({ length: 10 }, (_, i) => audit.record(event(i))));
      expect(results.every((r) => r.status === "rejected" && r.reason instanceof AuditUnavailableError)).toBe(true);
    } finally {
      await db.primary.raw("DROP TRIGGER audit_block");
    }
  });

  it("purges events older than the retention window, and keeps everything with 0 days", async () => {
    await db.primary("audit_events").delete();
    const now = Date.UTC(2026, 0, 31);
    const audit = createAuditLog({ db, key });
    const day = 86_400_000;
    await Promise.all([40, 31, 29, 1].map((age) => audit.record({ ...event(age), time: now - age * day })));
    expect(await purgeExpiredAuditEvents(audit, 0, now)).toBe(0);
    expect(await purgeExpiredAuditEvents(audit, 30, now)).toBe(2);
    const left = await audit.list({ limit: 10 });
    expect(left.map((e) => Math.round((now - e.timeMs) / day)).sort((a, b) => a - b)).toEqual([1, 29]);
  });

  it("shares one generated HMAC key through the database unless KEYMESH_AUDIT_KEY is set", async () => {
    const [a, b] = await Promise.all([loadAuditKey({ db }), loadAuditKey({ db })]);
    expect(a.length).toBe(32);
    expect(a.equals(b)).toBe(true);
    expect(a.equals(await loadAuditKey({ db }))).toBe(true);
    const configured = Buffer.alloc(32, 9);
    expect((await loadAuditKey({ db, spec: configured.toString("base64") })).equals(configured)).toBe(true);
  });
});
