import { generateKeyPairSync } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { registeredMigrations } from "../migrations.js";
import { createDatabase, type Database } from "../shared/storage/database.js";
import { migrate } from "../shared/storage/migrate.js";
import { Code } from "@connectrpc/connect";
import { toConnectError } from "../shared/errors.js";
import { COMMIT_SAMPLE, createCollectionStore, type CollectionStore, type CommitInput } from "./store.js";
import { createTestDatabase, type TestDatabase } from "../../test/support/mysql.js";

const accept = () => true;
const lease = (validUntil: number) => ({ publicKey: generateKeyPairSync("ed25519").publicKey, validUntil });

// On MariaDB a claim made by the same store commits through the stored procedure
// keymesh_open_batch_commit; every refusal below is answered by it there.
describe.each(["SQLite", "MariaDB"] as const)("collection commits under a key's fence (%s)", (backend) => {
  let dir: string;
  let mysql: TestDatabase | undefined;
  let db: Database;
  let store: CollectionStore;
  let clock: number;
  let batch = 0;

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), "keymesh-collection-"));
    mysql = backend === "MariaDB" ? await createTestDatabase() : undefined;
    db = createDatabase({ dataDir: dir, ...(mysql ? { url: mysql.url } : {}) });
    await migrate(db, await registeredMigrations(["collection"]));
    store = createCollectionStore(db);
    clock = 1_000_000;
    await store.seed(20, 8);
  });
  afterEach(async () => {
    await db.close();
    await mysql?.drop();
    rmSync(dir, { recursive: true, force: true });
  });

  async function claimed(fence: number, keyId = "k-1", size = 2): Promise<CommitInput> {
    const claimId = `c-${++batch}`;
    const records = await store.claim({ claimId, claimant: "e", jobId: "j", size, now: clock, expiresAt: clock + 10_000 });
    return {
      claimId, batchId: `b-${batch}`, keyId, fence: BigInt(fence),
      signatures: records.map((r) => ({ recordId: r.id, signature: Buffer.alloc(64, 1) })),
    };
  }
  const history = async () => (await db.primary("batches").select("*")) as Record<string, unknown>[];
  const stored = async () => Number(((await db.primary("signatures").count({ n: "*" })) as { n: number }[])[0]!.n);

  it("exports a job's records batch by batch, each once, leaving out other jobs' and refused batches", async () => {
    const a = await claimed(1, "k-1", 3);
    const b = await claimed(2, "k-1", 2);
    const refused = await claimed(1, "k-1", 2); // the fence fell behind b's: refused
    for (const c of [a, b, refused]) await store.commit(c, () => clock, lease(clock + 5000), accept);
    // Another job's batch.
    const other = await store.claim({ claimId: "c-other", claimant: "e", jobId: "j-other", size: 4, now: clock, expiresAt: clock + 10_000 });
    await store.commit({ claimId: "c-other", batchId: "b-other", keyId: "k-2", fence: 1n, signatures: other.map((r) => ({ recordId: r.id, signature: Buffer.alloc(64, 2) })) }, () => clock, lease(clock + 5000), accept);

    expect(await store.committedBatches("j")).toEqual([a.batchId, b.batchId]);
    const ids = async (batchId: string) => (await store.exportBatch(batchId)).map((r) => [r.record.id, r.signature?.batchId]);
    expect(await ids(a.batchId)).toEqual(a.signatures.map((s) => [s.recordId, a.batchId]));
    expect(await ids(b.batchId)).toEqual(b.signatures.map((s) => [s.recordId, b.batchId]));
    expect(await ids(refused.batchId)).toEqual([]);
    expect(await store.committedBatches("j-other")).toEqual(["b-other"]);
    expect(await store.committedBatches("j-none")).toEqual([]);
  });

  it("refuses a lower fence once a higher one of the same key committed", async () => {
    const newer = await claimed(5);
    expect((await store.commit(newer, () => clock, lease(clock + 5000), accept)).stored).toBe(2);
    const older = await claimed(4);
    const res = await store.commit(older, () => clock, lease(clock + 5000), accept);
    expect(res.stored).toBe(0);
    expect(res.rejections.map((r) => r.reason)).toEqual(["stale_fence", "stale_fence"]);
    // Another key's fences are its own.
    expect((await store.commit(await claimed(1, "k-2"), () => clock, lease(clock + 5000), accept)).stored).toBe(2);
    expect(await stored()).toBe(4);
    const fences = await db.primary("collection_key_fences").select("key_id", "fence").orderBy("key_id");
    expect(fences).toEqual([{ key_id: "k-1", fence: 5 }, { key_id: "k-2", fence: 1 }]);
  });

  it("refuses a lease that lapsed before the commit, storing only its history row", async () => {
    const lapsed = await store.commit(await claimed(4), () => clock, lease(clock), accept);
    expect(lapsed.rejections[0]?.reason).toBe("stale_fence");
    expect(await stored()).toBe(0);
    expect(await history()).toMatchObject([{ outcome: "rejected", stored: 0, rejected: 2, committed_at: clock }]);
    // Refused fences were not recorded as accepted: the next lease of the key still commits.
    expect((await store.commit(await claimed(5), () => clock, lease(clock + 1), accept)).stored).toBe(2);
  });

  it("refuses a batch whose spot-checked signature does not verify", async () => {
    const res = await store.commit(await claimed(2), () => clock, lease(clock + 5000), () => false);
    expect(res.rejections[0]?.reason).toBe("invalid_signature");
    expect(await stored()).toBe(0);
  });

  it("refuses records outside the claim first, so invented ids cannot dodge the signature sample", async () => {
    const batch = await claimed(2, "k-1", 4);
    // One bad signature among the claimed records, plus 2000 invented record ids.
    const bad = batch.signatures[0]!;
    const invented = Array.from({ length: 2000 }, (_, i) => ({ recordId: 1_000_000 + i, signature: Buffer.alloc(64, 1) }));
    const checked: number[] = [];
    const verifier = (_pk: unknown, payloads: Map<number, Buffer>, sigs: CommitInput["signatures"]) => {
      checked.push(...sigs.map((s) => s.recordId));
      expect(sigs.every((s) => payloads.has(s.recordId))).toBe(true);
      return !sigs.includes(bad);
    };
    const res = await store.commit({ ...batch, signatures: [...invented, ...batch.signatures] }, () => clock, lease(clock + 5000), verifier);
    expect(res.stored).toBe(0);
    expect(checked.every((id) => id < 1_000_000)).toBe(true);
    expect(new Set(checked).size).toBe(4);
    expect(await stored()).toBe(0);
    // Without the bad one, the claimed records are stored and the invented ids refused.
    const ok = await store.commit({ ...batch, signatures: [...invented, ...batch.signatures] }, () => clock, lease(clock + 5000), accept);
    expect(ok.stored).toBe(4);
    expect(ok.rejections.filter((r) => r.reason === "not_in_claim")).toHaveLength(2000);
  });

  it("samples several signatures of a large batch, not one", async () => {
    await store.seed(100, 8);
    const batch = await claimed(2, "k-1", 100);
    let sampled = 0;
    await store.commit(batch, () => clock, lease(clock + 5000), (_pk, _p, sigs) => ((sampled = sigs.length), true));
    expect(sampled).toBe(COMMIT_SAMPLE);
    expect(COMMIT_SAMPLE).toBeGreaterThan(1);
  });

  it("writes one truthful history row per batch and refuses a second batch under one lease", async () => {
    const claimedAt = clock;
    const first = await claimed(7);
    clock += 250;
    expect((await store.commit(first, () => clock, lease(clock + 5000), accept)).stored).toBe(2);
    const second = await claimed(7);
    const res = await store.commit(second, () => clock, lease(clock + 5000), accept);
    expect(res.stored).toBe(0);
    expect(res.rejections.map((r) => r.reason)).toEqual(["stale_fence", "stale_fence"]);
    const rows = (await history()).sort((a, b) => String(a.outcome).localeCompare(String(b.outcome)));
    // The second batch is recorded under its own id, as refused: nothing stored without a row.
    expect(rows).toHaveLength(2);
    expect(rows[1]).toMatchObject({ id: second.batchId, outcome: "rejected", stored: 0, rejected: 2 });
    expect(rows[0]).toMatchObject({ id: first.batchId, job_id: "j", executor: "e", outcome: "committed", stored: 2, claimed: 2 });
    expect(Number(rows[0]!.start_at)).toBe(claimedAt);
    expect(Number(rows[0]!.committed_at)).toBe(claimedAt + 250);
    // A reused batch id is the caller's mistake: InvalidArgument, and nothing written.
    const reused = await claimed(8);
    const err = await store.commit({ ...reused, batchId: first.batchId }, () => clock, lease(clock + 5000), accept).catch((e: unknown) => e);
    expect(toConnectError(err).code).toBe(Code.InvalidArgument);
    expect(await stored()).toBe(2);
    expect(await history()).toHaveLength(2);
  });

  describe("claims by id range", () => {
    const ids = (c: CommitInput) => c.signatures.map((s) => s.recordId);
    const claimState = async (claimId: string) => ((await db.primary("claims").where({ id: claimId }).first()) as { state: string } | undefined)?.state;

    it("hands out consecutive ranges that never overlap, and nothing once every record is claimed", async () => {
      const a = await claimed(1, "k-1", 8);
      const b = await claimed(1, "k-2", 8);
      const c = await claimed(1, "k-3", 8);
      expect(ids(a)).toEqual(Array.from({ length: 8 }, (_, i) => ids(a)[0]! + i));
      expect(ids(b)[0]).toBe(ids(a)[7]! + 1);
      expect(ids(c)).toHaveLength(4);
      expect((await claimed(1, "k-4", 8)).signatures).toHaveLength(0);
      expect((await store.progress(clock)).claimed).toBe(20);
    });

    it("claims every record of two seeds that ran at once, with a claim made between their commits", async () => {
      // Claim the 20 records of beforeEach: fresh claims now start after them.
      expect((await claimed(1, "k-1", 20)).signatures).toHaveLength(20);
      // A long seed (many chunks, yielding between them) and a short one started while it runs.
      const long = store.seed(20_000, 8);
      await new Promise((r) => setTimeout(r, 20));
      const short = store.seed(50, 8);
      // Whichever commits first, a claim right after may take its records; the other seed's
      // records must still come after every claimed range, not below it.
      const taken = await Promise.race([long, short]).then(() => claimed(1, "k-2", 100));
      await Promise.all([long, short]);
      let total = taken.signatures.length;
      for (let n = 3; ; n++) {
        const next = await claimed(1, `k-${n}`, 5000);
        if (next.signatures.length === 0) break;
        total += next.signatures.length;
      }
      expect(total).toBe(20_050);
      expect((await store.progress(clock)).total).toBe(20_070);
    });

    // SQLite has one writer and no seed lock: a second seed waits for the connection instead.
    it.runIf(backend === "MariaDB")("lets a seed waiting for another one's lock be cancelled, adding nothing", async () => {
      const cancel = new AbortController();
      let settled = false;
      let waiting: Promise<unknown> = Promise.resolve();
      let heldUntilSettled = false;
      // Another seed's transaction holds the lock until the waiting one has given up (or 10 s).
      await db.primary.transaction(async (trx) => {
        await trx.raw("INSERT INTO collection_locks (name) VALUES ('seed') ON DUPLICATE KEY UPDATE name = name");
        waiting = store.seed(1000, 8, cancel.signal).then(
          () => "seeded",
          (err: unknown) => toConnectError(err).code,
        ).finally(() => (settled = true));
        setTimeout(() => cancel.abort(), 100);
        const deadline = Date.now() + 10_000;
        while (!settled && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
        heldUntilSettled = settled;
      });
      expect(await waiting).toBe(Code.Canceled);
      expect(heldUntilSettled).toBe(true);
      expect((await store.progress(clock)).total).toBe(20);
    });

    it("gives an expired claim's range to a new claim and refuses the old holder's commit", async () => {
      const old = await claimed(1, "k-1", 20);
      clock += 20_000; // past the claim's expiry
      const again = await claimed(2, "k-2", 20);
      expect(ids(again)).toEqual(ids(old));
      expect(await claimState(old.claimId)).toBe("superseded");
      const late = await store.commit(old, () => clock, lease(clock + 5000), accept);
      expect(late.stored).toBe(0);
      expect(late.rejections.every((r) => r.reason === "not_in_claim")).toBe(true);
      expect((await store.commit(again, () => clock, lease(clock + 5000), accept)).stored).toBe(20);
      expect(await stored()).toBe(20);
    });

    it("makes a released claim's records claimable again at once, after the fresh ones", async () => {
      const first = await claimed(1, "k-1", 5);
      expect(await store.releaseClaim(first.claimId)).toBe(5);
      const fresh = await claimed(1, "k-1", 15);
      expect(ids(fresh)[0]).toBe(ids(first)[4]! + 1);
      expect(ids(await claimed(1, "k-1", 15))).toEqual(ids(first));
    });

    it("commits part of a claim, leaving the rest claimable, and splits a range larger than the batch", async () => {
      const whole = await claimed(1, "k-1", 20);
      const part = { ...whole, signatures: whole.signatures.slice(0, 12) };
      expect((await store.commit(part, () => clock, lease(clock + 5000), accept)).stored).toBe(12);
      // The rest of the range comes back, in batches of the size asked for.
      const next = await claimed(2, "k-1", 5);
      expect(ids(next)).toEqual(ids(whole).slice(12, 17));
      expect(ids(await claimed(3, "k-1", 5))).toEqual(ids(whole).slice(17));
    });

    it("checks a commit made through another collection process the same way", async () => {
      const batch = await claimed(3, "k-1", 10);
      const other = createCollectionStore(db);
      let probed = 0;
      const res = await other.commit(batch, () => clock, lease(clock + 5000), (_pk, payloads, sigs) => ((probed = sigs.length), sigs.every((s) => payloads.has(s.recordId))));
      expect(res.stored).toBe(10);
      expect(probed).toBe(10);
      expect(await claimState(batch.claimId)).toBe("committed");
      // The process that made the claim refuses a second commit of it.
      const again = await store.commit({ ...batch, batchId: "b-again", fence: 4n }, () => clock, lease(clock + 5000), accept);
      expect(again.rejections.every((r) => r.reason === "already_signed")).toBe(true);
    });

    it("samples a partial commit from the records it holds, not only the claim-time draw", async () => {
      await store.seed(200, 8);
      const batch = await claimed(2, "k-1", 200);
      let sampled: number[] = [];
      const few = { ...batch, signatures: batch.signatures.slice(0, 3) };
      await store.commit(few, () => clock, lease(clock + 5000), (_pk, payloads, sigs) => ((sampled = sigs.map((s) => s.recordId)), sigs.every((s) => payloads.has(s.recordId))));
      expect(sampled.sort()).toEqual(ids(few).sort());
    });
  });
});
