import { generateKeyPairSync, sign } from "node:crypto";
import { describe, expect, it } from "vitest";
import { ed25519PrivateKeyFromPkcs8, ed25519PublicKey, rawEd25519PublicKey, verifyEd25519 } from "./ed25519.js";

describe("Ed25519 key import", () => {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  const payload = Buffer.from("a record");

  it("opens a sealed PKCS#8 key as the same private key", () => {
    const imported = ed25519PrivateKeyFromPkcs8(privateKey.export({ format: "der", type: "pkcs8" }));
    // Ed25519 is deterministic: the same key gives the same signature.
    expect(sign(null, payload, imported).equals(sign(null, payload, privateKey))).toBe(true);
    expect(imported.export({ format: "jwk" }).x).toBe(privateKey.export({ format: "jwk" }).x);
  });

  it("builds a public key from its 32 raw bytes that verifies the key's signatures", () => {
    const imported = ed25519PublicKey(rawEd25519PublicKey(publicKey));
    expect(verifyEd25519(imported, payload, sign(null, payload, privateKey))).toBe(true);
    expect(verifyEd25519(imported, Buffer.from("another record"), sign(null, payload, privateKey))).toBe(false);
  });

  it("refuses a public key of the wrong length and a private key that is not PKCS#8", () => {
    expect(() => ed25519PublicKey(Buffer.alloc(31))).toThrow(/32 bytes/);
    expect(() => ed25519PrivateKeyFromPkcs8(Buffer.alloc(48))).toThrow();
  });
});
