import { randomBytes } from "node:crypto";
import { mkdtempSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { SealedDataError, UnknownMasterKeyError } from "../errors.js";
import { createMasterKeyring, open, rewrap, seal, sealedVersion } from "./envelope.js";
import { loadMasterKeyring, MasterKeyConfigError, parseMasterKeys } from "./master-keys.js";

const ring = (primary: number, ...versions: number[]) =>
  createMasterKeyring(new Map(versions.map((v) => [v, Buffer.alloc(32, v)])), primary);
const ctx = { table: "keyring_keys", column: "private_key", id: "k1" };

describe("envelope encryption", () => {
  it("round-trips and uses a fresh nonce each time", () => {
    const keys = ring(1, 1);
    const a = seal(keys, Buffer.from("secret"), ctx);
    const b = seal(keys, Buffer.from("secret"), ctx);
    expect(a.equals(b)).toBe(false);
    expect(open(keys, a, ctx).toString()).toBe("secret");
    expect(sealedVersion(a)).toBe(1);
  });

  it("fails with SealedDataError for every tampered byte and for truncation", () => {
    const keys = ring(1, 1);
    const sealed = seal(keys, randomBytes(48), ctx);
    for (let i = 0; i < sealed.length; i++) {
      const copy = Buffer.from(sealed);
      copy[i]! ^= 0x01;
      // Flipping the version byte may name a version we do not hold: also a refusal.
      expect(() => open(keys, copy, ctx)).toThrow(i >= 1 && i <= 4 ? Error : SealedDataError);
    }
    expect(() => open(keys, sealed.subarray(0, sealed.length - 1), ctx)).toThrow(SealedDataError);
    expect(() => open(keys, sealed.subarray(0, 10), ctx)).toThrow(SealedDataError);
  });

  it("binds the ciphertext to its row", () => {
    const keys = ring(1, 1);
    const sealed = seal(keys, Buffer.from("x"), ctx);
    expect(() => open(keys, sealed, { ...ctx, id: "k2" })).toThrow(SealedDataError);
    expect(() => open(keys, sealed, { ...ctx, column: "other" })).toThrow(SealedDataError);
    expect(() => open(keys, sealed, { ...ctx, rowVersion: 2 })).toThrow(SealedDataError);
  });

  it("keeps old versions readable and rewraps to the primary", () => {
    const old = seal(ring(1, 1), Buffer.from("v"), ctx);
    const rotated = ring(2, 1, 2);
    expect(open(rotated, old, ctx).toString()).toBe("v");
    const moved = rewrap(rotated, old, ctx);
    expect(sealedVersion(moved)).toBe(2);
    expect(() => open(ring(2, 2), old, ctx)).toThrow(UnknownMasterKeyError);
  });
});

describe("master key configuration", () => {
  it("parses versioned keys and picks the highest as primary", () => {
    const k = randomBytes(32).toString("base64");
    const keys = parseMasterKeys(`1:${k}, 3:${k}`);
    expect(keys.primaryVersion).toBe(3);
    expect(keys.versions()).toEqual([1, 3]);
  });

  it("rejects malformed keys with a message that names the entry but not the key", () => {
    const short = randomBytes(16).toString("base64");
    expect(() => parseMasterKeys(`1:${short}`)).toThrow(/entry 1 \(version 1\): key decodes to 16 bytes/);
    expect(() => parseMasterKeys("nonsense")).toThrow(MasterKeyConfigError);
    try {
      parseMasterKeys(`1:${short}`);
    } catch (err) {
      expect(String(err)).not.toContain(short);
    }
  });

  it("generates development keys once, private to the owner", () => {
    const dir = mkdtempSync(join(tmpdir(), "keymesh-mk-"));
    const a = loadMasterKeyring({ dataDir: dir });
    const b = loadMasterKeyring({ dataDir: dir });
    expect(a.key(1)!.equals(b.key(1)!)).toBe(true);
    expect(statSync(join(dir, "master-keys.json")).mode & 0o077).toBe(0);
  });
});
