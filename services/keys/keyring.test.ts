import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code } from "@connectrpc/connect";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createMemoryCoordinator } from "../shared/coordination/index.js";
import type { Coordinator } from "../shared/coordination/types.js";
import { createMasterKeyring, open } from "../shared/crypto/envelope.js";
import { createLeaseTokens, hashLeaseId, newLeaseId } from "../shared/crypto/lease-token.js";
import { keyringSealContext } from "./seal-context.js";
import { toConnectError } from "../shared/errors.js";
import { createDatabase, type Database } from "../shared/storage/database.js";
import { registeredMigrations } from "../migrations.js";
import { migrate } from "../shared/storage/migrate.js";
import { createKeyring, type Keyring } from "./keyring.js";
import { createKeyringStore } from "./keyring-store.js";

const ring = createMasterKeyring(new Map([[1, randomBytes(32)]]), 1);
const tokens = createLeaseTokens(() => ring);
const codeOf = (p: Promise<unknown>) => p.then(() => Code.Unknown, (e: unknown) => toConnectError(e).code);

describe("keyring leases (SQLite, in-process coordination)", () => {
  let dir: string;
  let db: Database;
  let coordinator: Coordinator;
  let clock: number;
  let keyring: Keyring;

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), "keymesh-keyring-"));
    db = createDatabase({ dataDir: dir });
    await migrate(db, await registeredMigrations());
    clock = 1_000_000;
    coordinator = createMemoryCoordinator({ now: () => clock });
    keyring = createKeyring({ store: createKeyringStore(db), coordinator, masterKeys: () => ring, tokens, now: () => clock });
  });
  afterEach(async () => {
    await coordinator.close();
    await db.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("stores private keys only sealed, bound to their row", async () => {
    const [key] = await keyring.createKeys(1);
    const pkcs8 = open(ring, key!.wrappedPrivateKey, keyringSealContext(key!.id));
    expect(pkcs8.length).toBeGreaterThan(32);
    expect(() => open(ring, key!.wrappedPrivateKey, keyringSealContext("k-other"))).toThrow();
  });

  it("leases the least recently used free key, with a new fence each time", async () => {
    const keys = await keyring.createKeys(3);
    const order: string[] = [];
    const fences: bigint[] = [];
    for (let i = 0; i < 6; i++) {
      clock += 10;
      const lease = await keyring.acquire("exec-a", 5000);
      order.push(lease.keyId);
      fences.push(lease.fence);
      clock += 10;
      expect(await keyring.release(lease.keyId, lease.leaseId, lease.fence, true)).toBe(true);
    }
    // Never-used keys first (in id order), then round robin by last use.
    const byId = [...keys].map((k) => k.id).sort();
    expect(order).toEqual([...byId, ...byId]);
    expect(fences).toEqual([1n, 1n, 1n, 2n, 2n, 2n]);
  });

  it("skips held keys and answers ResourceExhausted when every key is busy", async () => {
    await keyring.createKeys(2);
    const a = await keyring.acquire("exec-a", 5000);
    const b = await keyring.acquire("exec-b", 5000);
    expect(a.keyId).not.toBe(b.keyId);
    expect(await codeOf(keyring.acquire("exec-c", 5000))).toBe(Code.ResourceExhausted);
  });

  it("fences out a holder whose lease lapsed and was taken over", async () => {
    await keyring.createKeys(1);
    const first = await keyring.acquire("exec-a", 2000);
    clock += 2500; // the lease expires without a renewal
    const second = await keyring.acquire("exec-b", 2000);
    expect(second.keyId).toBe(first.keyId);
    expect(second.fence).toBe(first.fence + 1n);
    expect(await codeOf(keyring.renew(first.keyId, first.leaseId, first.fence, 2000))).toBe(Code.Aborted);
    expect(await codeOf(keyring.wrappedKey(first.keyId, first.leaseId, first.fence))).toBe(Code.Aborted);
    // The stale release changes nothing; the new holder still has its lease.
    expect(await keyring.release(first.keyId, first.leaseId, first.fence, true)).toBe(false);
    expect((await keyring.wrappedKey(second.keyId, second.leaseId, second.fence)).id).toBe(second.keyId);
    // The first lease is recorded as lapsed, at the moment it lapsed.
    const rows = (await db.primary("key_leases").select("fence", "released_at", "lapsed_at").where("key_id", first.keyId).orderBy("fence")) as {
      fence: number;
      released_at: number | null;
      lapsed_at: number | null;
    }[];
    expect(rows.map((r) => [Number(r.fence), r.released_at, r.lapsed_at === null ? null : Number(r.lapsed_at)])).toEqual([
      [1, null, 1_002_000],
      [2, null, null],
    ]);
  });

  it("makes the lease id a capability: only its holder renews, releases or gets the key", async () => {
    await keyring.createKeys(1);
    const lease = await keyring.acquire("exec-a", 5000);
    expect(Buffer.from(lease.leaseId, "base64url").length).toBe(32);
    // Only the hash is stored, on the key and in the lease history.
    const stored = (await db.primary("keyring_keys").select("lease_hash").first()) as { lease_hash: Buffer };
    expect(Buffer.from(stored.lease_hash).equals(hashLeaseId(lease.leaseId))).toBe(true);
    const dump = JSON.stringify(await db.primary("key_leases").select("*"));
    expect(dump).not.toContain(lease.leaseId);
    // The public view carries no lease id.
    expect(JSON.stringify(await keyring.get(lease.keyId), (_k, v: unknown) => (typeof v === "bigint" ? String(v) : v))).not.toContain(lease.leaseId);
    // A made-up lease id with the right (public) fence does nothing.
    const guess = newLeaseId();
    expect(await codeOf(keyring.renew(lease.keyId, guess, lease.fence, 5000))).toBe(Code.Aborted);
    expect(await codeOf(keyring.wrappedKey(lease.keyId, guess, lease.fence))).toBe(Code.Aborted);
    expect(await keyring.release(lease.keyId, guess, lease.fence, true)).toBe(false);
    // Fences are int64: the largest one is simply not this lease.
    expect(await codeOf(keyring.renew(lease.keyId, lease.leaseId, 9223372036854775807n, 5000))).toBe(Code.Aborted);
    // The holder still holds it, and renewing mints a token for the new expiry.
    clock += 1000;
    const renewed = await keyring.renew(lease.keyId, lease.leaseId, lease.fence, 5000);
    expect(renewed.expiresAt).toBe(clock + 5000);
    expect(tokens.verify(renewed.leaseToken)).toMatchObject({ keyId: lease.keyId, fence: lease.fence, expiresAt: clock + 5000 });
    expect(tokens.verify(lease.leaseToken)?.expiresAt).toBe(clock - 1000 + 5000);
    expect(await keyring.release(lease.keyId, lease.leaseId, lease.fence, true)).toBe(true);
    // After release the key material is refused even to the former holder.
    expect(await codeOf(keyring.wrappedKey(lease.keyId, lease.leaseId, lease.fence))).toBe(Code.Aborted);
  });

  it("skips a key whose lock is held elsewhere (a stale lock) and leases the next one", async () => {
    const keys = (await keyring.createKeys(3)).map((k) => k.id).sort();
    // A crashed process left locks on the two least recently used keys; their rows are free.
    await coordinator.leases.tryAcquire(`keyring:${keys[0]}`, 60_000);
    await coordinator.leases.tryAcquire(`keyring:${keys[1]}`, 60_000);
    const lease = await keyring.acquire("exec-a", 5000);
    expect(lease.keyId).toBe(keys[2]);
    expect(lease.fence).toBe(1n);
    // The skipped keys were not touched: no fence moved, no history row.
    const rows = (await db.primary("keyring_keys").select("id", "fence").orderBy("id")) as { id: string; fence: number }[];
    expect(rows.map((r) => Number(r.fence))).toEqual([0, 0, 1]);
    expect(await codeOf(keyring.acquire("exec-b", 5000))).toBe(Code.ResourceExhausted);
    // The grant gives up after `lockAttempts` refused locks rather than walking the keyring.
    const bounded = createKeyring({ store: createKeyringStore(db), coordinator, masterKeys: () => ring, tokens, now: () => clock, lockAttempts: 1 });
    expect(await keyring.release(lease.keyId, lease.leaseId, lease.fence, false)).toBe(true);
    expect(await codeOf(bounded.acquire("exec-c", 5000))).toBe(Code.ResourceExhausted);
  });

  it("rotates: releases the lease, then leases the least recently used other key", async () => {
    const keys = (await keyring.createKeys(3)).map((k) => k.id).sort();
    clock += 10;
    const first = await keyring.acquire("exec-a", 5000);
    expect(first.keyId).toBe(keys[0]);
    clock += 10;
    const rotated = await keyring.rotate(first.keyId, first.leaseId, first.fence, true, "exec-a", 5000);
    expect(rotated.released).toBe(true);
    expect(rotated.grant).toMatchObject({ keyId: keys[1], fence: 1n, previousLastUsedAt: 0 });
    // The released lease is over: no renewal, no second release, no key material.
    expect(await codeOf(keyring.renew(first.keyId, first.leaseId, first.fence, 5000))).toBe(Code.Aborted);
    expect(await keyring.release(first.keyId, first.leaseId, first.fence, true)).toBe(false);
    expect(await codeOf(keyring.wrappedKey(first.keyId, first.leaseId, first.fence))).toBe(Code.Aborted);
    const next = rotated.grant!;
    expect((await keyring.wrappedKey(next.keyId, next.leaseId, next.fence)).id).toBe(keys[1]);
    expect(tokens.verify(next.leaseToken)).toMatchObject({ keyId: keys[1], fence: 1n, expiresAt: clock + 5000 });
    // The history says released, at the rotation, and the first key's last use moved.
    const history = (await db.primary("key_leases").select("key_id", "fence", "released_at", "lapsed_at").orderBy("id")) as {
      key_id: string;
      fence: number;
      released_at: number | null;
      lapsed_at: number | null;
    }[];
    expect(history.map((h) => [h.key_id, Number(h.fence), h.released_at === null ? null : Number(h.released_at), h.lapsed_at])).toEqual([
      [keys[0], 1, clock, null],
      [keys[1], 1, null, null],
    ]);
    expect((await keyring.get(keys[0]!)).lastUsedAt).toBe(clock);
    // Unused: the key keeps its last use, and the next rotation still moves on to another key.
    clock += 10;
    const again = await keyring.rotate(next.keyId, next.leaseId, next.fence, false, "exec-a", 5000);
    expect(again.grant?.keyId).toBe(keys[2]);
    expect((await keyring.get(keys[1]!)).lastUsedAt).toBe(clock - 10);
  });

  it("rotates with a wrong lease id or fence: releases nothing, still leases another key", async () => {
    const [a, b, c] = (await keyring.createKeys(3)).map((k) => k.id).sort();
    const held = await keyring.acquire("exec-a", 5000);
    expect(held.keyId).toBe(a);
    const guessed = await keyring.rotate(held.keyId, newLeaseId(), held.fence, true, "mallory", 5000);
    expect(guessed.released).toBe(false);
    expect(guessed.grant?.keyId).toBe(b);
    // A guessed lease id does not even touch the holder's lock.
    expect(await coordinator.leases.tryAcquire(`keyring:${a}`, 1000)).toBeNull();
    const wrongFence = await keyring.rotate(held.keyId, held.leaseId, held.fence + 1n, true, "exec-a", 5000);
    expect(wrongFence.released).toBe(false);
    expect(wrongFence.grant?.keyId).toBe(c);
    // The holder's lease is untouched in the database, which is what grants go by.
    expect((await keyring.wrappedKey(held.keyId, held.leaseId, held.fence)).leasedUntil).toBe(clock + 5000);
    expect((await keyring.acquire("exec-b", 5000).catch((e: unknown) => toConnectError(e).code))).toBe(Code.ResourceExhausted);
    expect((await keyring.renew(held.keyId, held.leaseId, held.fence, 5000)).expiresAt).toBe(clock + 5000);
    // Fences are int64: the largest one is simply not this lease.
    expect((await keyring.rotate(held.keyId, held.leaseId, 9223372036854775807n, true, "exec-a", 5000)).released).toBe(false);
  });

  it("rotates when every other key is busy: the release stands, no lease is granted", async () => {
    await keyring.createKeys(2);
    const mine = await keyring.acquire("exec-a", 5000);
    const other = await keyring.acquire("exec-b", 5000);
    expect(other.keyId).not.toBe(mine.keyId);
    const rotated = await keyring.rotate(mine.keyId, mine.leaseId, mine.fence, true, "exec-a", 5000);
    expect(rotated).toEqual({ released: true, grant: undefined });
    // The released key is free for whoever asks next, under the next fence.
    const next = await keyring.acquire("exec-c", 5000);
    expect([next.keyId, next.fence]).toEqual([mine.keyId, 2n]);
  });

  // Bad TTLs, counts and key ids are refused by key_management_service.proto's rules before
  // the keyring sees them (test/validation.test.ts).
  it("refuses an empty keyring and an unknown key with clear codes", async () => {
    expect(await codeOf(keyring.acquire("exec-a", 5000))).toBe(Code.ResourceExhausted);
    await keyring.createKeys(1);
    expect(await codeOf(keyring.get("k-missing"))).toBe(Code.NotFound);
  });
});
