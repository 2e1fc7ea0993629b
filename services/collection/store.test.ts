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

const accept = () => true;
const lease = (validUntil: number) => ({ publicKey: generateKeyPairSync("ed25519").publicKey, validUntil });

describe("collection commits under a key's fence (SQLite)", () => {
  let dir: string;
  let db: Database;
  let store: CollectionStore;
  let clock: number;
  let batch = 0;

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), "keymesh-collection-"));
    db = createDatabase({ dataDir: dir });
    await migrate(db, await registeredMigrations(["collection"]));
    store = createCollectionStore(db);
    clock = 1_000_000;
    await store.seed(20, 8);
  });
  afterEach(async () => {
    await db.close();
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
});
