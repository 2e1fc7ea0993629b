import { generateKeyPairSync, randomBytes } from "node:crypto";
import { afterAll, describe, expect, it } from "vitest";
import { Code } from "@connectrpc/connect";
import { createMasterKeyring, seal } from "../shared/crypto/envelope.js";
import { rawEd25519PublicKey, ed25519PublicKey, verifyEd25519 } from "../shared/crypto/ed25519.js";
import { createLeaseTokens, hashLeaseId, newLeaseId } from "../shared/crypto/lease-token.js";
import { keyringSealContext } from "../keys/seal-context.js";
import { toConnectError } from "../shared/errors.js";
import { createSignPool } from "./sign-pool.js";
import { createSigner } from "./signer.js";

const ring = createMasterKeyring(new Map([[1, randomBytes(32)]]), 1);
const tokens = createLeaseTokens(() => ring);
const { privateKey, publicKey } = generateKeyPairSync("ed25519");
const wrapped = seal(ring, privateKey.export({ format: "der", type: "pkcs8" }), keyringSealContext("k1"));
const items = (n: number) => Array.from({ length: n }, () => randomBytes(32));

/** A lease as the key service would grant it. */
const leaseOf = (fence: bigint, expiresAt = Date.now() + 10_000, keyId = "k1") => {
  const leaseId = newLeaseId();
  return { keyId, fence, leaseId, leaseToken: tokens.mint({ keyId, fence, leaseHash: hashLeaseId(leaseId), expiresAt }) };
};
const threads = createSignPool({ threads: 2, minChunk: 1 });
/** The pool, counting the batches that reached it. */
const pool = {
  batches: 0,
  sign(...args: Parameters<typeof threads.sign>) {
    pool.batches++;
    return threads.sign(...args);
  },
};
afterAll(() => threads.close());
const codeOf = async (p: Promise<unknown>) => toConnectError(await p.then(() => undefined, (e: unknown) => e)).code;

describe("signer", () => {
  it("opens a key once and signs verifiably under every live lease", async () => {
    const fetched: string[] = [];
    const signer = createSigner({
      pool,
      masterKeys: () => ring,
      tokens,
      source: async (keyId, _fence, leaseId) => {
        fetched.push(leaseId);
        return { keyId, wrapped };
      },
    });
    const batch = items(50);
    const lease = leaseOf(7n);
    const first = await signer.signBatch(lease, batch);
    await signer.signBatch(lease, items(10));
    await signer.signBatch(leaseOf(8n), items(1));
    expect(fetched).toEqual([lease.leaseId]);
    const pub = ed25519PublicKey(rawEd25519PublicKey(publicKey));
    expect(first.length).toBe(64 * batch.length);
    expect(batch.every((payload, i) => verifyEd25519(pub, payload, first.subarray(64 * i, 64 * i + 64)))).toBe(true);
  });

  it("refuses lapsed, forged and foreign leases with Aborted before touching a key", async () => {
    let calls = 0;
    const signer = createSigner({ pool, masterKeys: () => ring, tokens, source: async (keyId) => (calls++, { keyId, wrapped }) });
    const live = leaseOf(3n);
    const signed = pool.batches;
    // Lapsed.
    expect(await codeOf(signer.signBatch(leaseOf(3n, Date.now() - 1), items(1)))).toBe(Code.Aborted);
    // Another lease id than the one the token names (a guessed or made-up id).
    expect(await codeOf(signer.signBatch({ ...live, leaseId: newLeaseId() }, items(1)))).toBe(Code.Aborted);
    // Another fence or key than the token's, including the largest int64.
    expect(await codeOf(signer.signBatch({ ...live, fence: 9223372036854775807n }, items(1)))).toBe(Code.Aborted);
    expect(await codeOf(signer.signBatch({ ...live, keyId: "k2" }, items(1)))).toBe(Code.Aborted);
    // A token MAC'd under a key the key service does not have.
    const other = createLeaseTokens(() => createMasterKeyring(new Map([[1, randomBytes(32)]]), 1));
    const forged = other.mint({ keyId: "k1", fence: 3n, leaseHash: hashLeaseId(live.leaseId), expiresAt: Date.now() + 10_000 });
    expect(await codeOf(signer.signBatch({ ...live, leaseToken: forged }, items(1)))).toBe(Code.Aborted);
    expect(await codeOf(signer.signBatch({ ...live, leaseToken: "" }, items(1)))).toBe(Code.Aborted);
    expect(calls).toBe(0);
    expect(pool.batches).toBe(signed);
    await signer.signBatch(live, items(1));
    expect(calls).toBe(1);
    // Once a newer lease of the key signed, the older one (released or lapsed) is over.
    await signer.signBatch(leaseOf(4n), items(1));
    expect(await codeOf(signer.signBatch(live, items(1)))).toBe(Code.Aborted);
  });

  it("refuses tampered key material with DataLoss and never caches the failure", async () => {
    const bad = Buffer.from(wrapped);
    bad[bad.length - 1]! ^= 1;
    let calls = 0;
    const signer = createSigner({ pool, masterKeys: () => ring, tokens, source: async (keyId) => (calls++, { keyId, wrapped: bad }) });
    expect(await codeOf(signer.signBatch(leaseOf(1n), items(1)))).toBe(Code.DataLoss);
    await signer.signBatch(leaseOf(1n), items(1)).catch(() => undefined);
    expect(calls).toBe(2);
  });

  it("opens the sealed key a lease came with instead of fetching it, and fetches when it does not open", async () => {
    const fetched: string[] = [];
    const signer = createSigner({ pool, masterKeys: () => ring, tokens, source: async (keyId, _f, leaseId) => (fetched.push(keyId), { keyId, wrapped }) });
    const pub = ed25519PublicKey(rawEd25519PublicKey(publicKey));
    const batch = items(3);
    const sigs = await signer.signBatch(leaseOf(1n), batch, wrapped);
    expect(fetched).toEqual([]);
    expect(batch.every((payload, i) => verifyEd25519(pub, payload, sigs.subarray(64 * i, 64 * i + 64)))).toBe(true);

    // Key k2's lease presenting k1's sealed key: the seal is bound to k1, so it does not open
    // for k2; the key service is asked for k2's key (here it answers with the right one).
    const k2 = generateKeyPairSync("ed25519");
    const wrapped2 = seal(ring, k2.privateKey.export({ format: "der", type: "pkcs8" }), keyringSealContext("k2"));
    const other = createSigner({ pool, masterKeys: () => ring, tokens, source: async (keyId) => (fetched.push(keyId), { keyId, wrapped: wrapped2 }) });
    const one = items(1);
    const sig = await other.signBatch(leaseOf(1n, Date.now() + 10_000, "k2"), one, wrapped);
    expect(fetched).toEqual(["k2"]);
    expect(verifyEd25519(ed25519PublicKey(rawEd25519PublicKey(k2.publicKey)), one[0]!, sig)).toBe(true);
    expect(verifyEd25519(pub, one[0]!, sig)).toBe(false);

    // Garbage in place of the sealed key: fetched too.
    const third = createSigner({ pool, masterKeys: () => ring, tokens, source: async (keyId) => (fetched.push(keyId), { keyId, wrapped }) });
    await third.signBatch(leaseOf(1n), items(1), randomBytes(80));
    expect(fetched).toEqual(["k2", "k1"]);
  });
});
