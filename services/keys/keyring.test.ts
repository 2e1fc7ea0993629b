import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code } from "@connectrpc/connect";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createMemoryCoordinator } from "../shared/coordination/index.js";
import type { Coordinator } from "../shared/coordination/types.js";
import { createMasterKeyring, open } from "../shared/crypto/envelope.js";
import { keyringSealContext } from "./seal-context.js";
import { toConnectError } from "../shared/errors.js";
import { createDatabase, type Database } from "../shared/storage/database.js";
import { registeredMigrations } from "../migrations.js";
import { migrate } from "../shared/storage/migrate.js";
import { createKeyring, type Keyring } from "./keyring.js";
import { createKeyringStore } from "./keyring-store.js";

const ring = createMasterKeyring(new Map([[1, randomBytes(32)]]), 1);
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
    keyring = createKeyring({ store: createKeyringStore(db), coordinator, masterKeys: () => ring, now: () => clock });
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
    const fences: number[] = [];
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
    expect(fences).toEqual([1, 1, 1, 2, 2, 2]);
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
    expect(second.fence).toBe(first.fence + 1);
    expect(await codeOf(keyring.renew(first.keyId, first.leaseId, first.fence, 2000))).toBe(Code.Aborted);
    expect(await codeOf(keyring.wrappedKey(first.keyId, first.fence))).toBe(Code.Aborted);
    // The stale release changes nothing; the new holder still has its lease.
    expect(await keyring.release(first.keyId, first.leaseId, first.fence, true)).toBe(false);
    expect((await keyring.wrappedKey(second.keyId, second.fence)).id).toBe(second.keyId);
  });

  // Bad TTLs, counts and key ids are refused by key_management_service.proto's rules before
  // the keyring sees them (test/validation.test.ts).
  it("refuses an empty keyring and an unknown key with clear codes", async () => {
    expect(await codeOf(keyring.acquire("exec-a", 5000))).toBe(Code.ResourceExhausted);
    await keyring.createKeys(1);
    expect(await codeOf(keyring.get("k-missing"))).toBe(Code.NotFound);
  });
});
