import { generateKeyPairSync, randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { createMasterKeyring, seal } from "../shared/crypto/envelope.js";
import { rawEd25519PublicKey, ed25519PublicKey, verifyEd25519 } from "../shared/crypto/ed25519.js";
import { keyringSealContext } from "../keys/seal-context.js";
import { toConnectError } from "../shared/errors.js";
import { Code } from "@connectrpc/connect";
import { createSigner } from "./signer.js";

const ring = createMasterKeyring(new Map([[1, randomBytes(32)]]), 1);
const { privateKey, publicKey } = generateKeyPairSync("ed25519");
const wrapped = seal(ring, privateKey.export({ format: "der", type: "pkcs8" }), keyringSealContext("k1"));
const items = (n: number) => Array.from({ length: n }, (_, i) => ({ recordId: BigInt(i + 1), payload: randomBytes(32) }));

describe("signer", () => {
  it("opens a key once per lease and signs verifiably", async () => {
    const fetched: number[] = [];
    const signer = createSigner({
      masterKeys: () => ring,
      source: async (keyId, fence) => {
        fetched.push(fence);
        return { keyId, fence, wrapped };
      },
    });
    const batch = items(50);
    const first = await signer.signBatch("k1", 7, batch);
    await signer.signBatch("k1", 7, items(10));
    expect(fetched).toEqual([7]);
    const pub = ed25519PublicKey(rawEd25519PublicKey(publicKey));
    expect(first.every((s, i) => verifyEd25519(pub, batch[i]!.payload, s.signature))).toBe(true);
    // A new lease (fence) fetches again: the key service re-checks the fence each time.
    await signer.signBatch("k1", 8, items(1));
    expect(fetched).toEqual([7, 8]);
  });

  it("refuses tampered key material with DataLoss and never caches the failure", async () => {
    const bad = Buffer.from(wrapped);
    bad[bad.length - 1]! ^= 1;
    let calls = 0;
    const signer = createSigner({ masterKeys: () => ring, source: async (keyId, fence) => (calls++, { keyId, fence, wrapped: bad }) });
    const err = await signer.signBatch("k1", 1, items(1)).catch((e: unknown) => e);
    expect(toConnectError(err).code).toBe(Code.DataLoss);
    await signer.signBatch("k1", 1, items(1)).catch(() => undefined);
    expect(calls).toBe(2);
  });
});
