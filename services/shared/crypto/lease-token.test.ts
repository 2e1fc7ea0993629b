import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { createMasterKeyring } from "./envelope.js";
import { checkLease, createLeaseTokens, hashLeaseId, newLeaseId } from "./lease-token.js";

const ring = createMasterKeyring(new Map([[1, randomBytes(32)]]), 1);
const tokens = createLeaseTokens(() => ring);
const leaseId = newLeaseId();
const claims = { keyId: "k-1", fence: 9223372036854775807n, leaseHash: hashLeaseId(leaseId), expiresAt: Date.now() + 10_000 };

describe("lease tokens", () => {
  it("vouch for the key's public key, which nobody can swap", () => {
    const publicKey = randomBytes(32);
    const token = tokens.mint({ ...claims, publicKey });
    expect(tokens.verify(token)).toEqual({ ...claims, publicKey });
    const parts = token.split(".");
    parts[5] = randomBytes(32).toString("base64url");
    expect(tokens.verify(parts.join("."))).toBeUndefined();
    // Dropping the public key breaks the MAC too.
    expect(tokens.verify([...parts.slice(0, 5), parts[6]].join("."))).toBeUndefined();
  });

  it("still verify without a public key (tokens minted before it was carried)", () => {
    const token = tokens.mint(claims);
    expect(token.split(".")).toHaveLength(6);
    expect(tokens.verify(token)).toEqual({ ...claims, publicKey: undefined });
    expect(checkLease(tokens, { keyId: "k-1", fence: claims.fence, leaseId, leaseToken: token }, Date.now()).problem).toBeUndefined();
  });

  it("refuse a public key that is not 32 bytes, and tokens of another keyring", () => {
    expect(tokens.verify(tokens.mint({ ...claims, publicKey: randomBytes(31) }))).toBeUndefined();
    const other = createLeaseTokens(() => createMasterKeyring(new Map([[1, randomBytes(32)]]), 1));
    expect(other.verify(tokens.mint(claims))).toBeUndefined();
  });
});
