import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { registeredMigrations } from "../migrations.js";
import { createDatabase, type Database } from "../shared/storage/database.js";
import { migrate } from "../shared/storage/migrate.js";
import { createCollectionStore, type CollectionStore, type CommitInput } from "./store.js";

const accept = () => true;
const lease = (validUntil: number) => ({ publicKey: Buffer.alloc(32), validUntil });

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

  async function claimed(fence: number, keyId = "k-1"): Promise<CommitInput> {
    const claimId = `c-${++batch}`;
    const records = await store.claim({ claimId, claimant: "e", jobId: "j", size: 2, now: clock, expiresAt: clock + 10_000 });
    return {
      claimId, batchId: `b-${batch}`, keyId, fence, jobId: "j", executor: "e", startedAt: clock,
      signatures: records.map((r) => ({ recordId: r.id, signature: Buffer.alloc(64, 1) })),
    };
  }
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

  it("refuses a lease keys did not confirm, or one that lapsed before the commit", async () => {
    const unconfirmed = await claimed(3);
    const res = await store.commit(unconfirmed, () => clock, undefined, accept);
    expect(res.rejections[0]?.reason).toBe("stale_fence");
    const [row] = await db.primary("batches").where({ id: unconfirmed.batchId });
    expect(row).toMatchObject({ outcome: "rejected", stored: 0, rejected: 2 });
    const lapsed = await store.commit(await claimed(4), () => clock, lease(clock), accept);
    expect(lapsed.rejections[0]?.reason).toBe("stale_fence");
    expect(await stored()).toBe(0);
    // Refused fences were not recorded as accepted: the next lease of the key still commits.
    expect((await store.commit(await claimed(5), () => clock, lease(clock + 1), accept)).stored).toBe(2);
  });

  it("refuses a batch whose spot-checked signature does not verify", async () => {
    const res = await store.commit(await claimed(2), () => clock, lease(clock + 5000), () => false);
    expect(res.rejections[0]?.reason).toBe("invalid_signature");
    expect(await stored()).toBe(0);
  });
});
