import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import {
  contextOpen,
  contextSeal,
  deriveX25519KeyPair,
  generateX25519,
  HpkeOpenError,
  openBase,
  sealBase,
  setupBaseRecipient,
  setupBaseSender,
} from "./hpke.js";

interface Vectors {
  info: string;
  ikmE: string;
  pkEm: string;
  skEm: string;
  ikmR: string;
  pkRm: string;
  skRm: string;
  enc: string;
  key: string;
  base_nonce: string;
  exporter_secret: string;
  encryptions: { seq: number; pt: string; aad: string; ct: string }[];
}

const v = JSON.parse(readFileSync(new URL("./hpke-vectors.json", import.meta.url), "utf8")) as Vectors;
const hex = (s: string) => Buffer.from(s, "hex");

describe("HPKE against RFC 9180 A.1.1 (X25519, HKDF-SHA256, AES-128-GCM, base mode)", () => {
  it("derives the ephemeral and recipient key pairs from their ikm", () => {
    const e = deriveX25519KeyPair(hex(v.ikmE));
    expect(e.privateKey.toString("hex")).toBe(v.skEm);
    expect(e.publicKey.toString("hex")).toBe(v.pkEm);
    const r = deriveX25519KeyPair(hex(v.ikmR));
    expect(r.privateKey.toString("hex")).toBe(v.skRm);
    expect(r.publicKey.toString("hex")).toBe(v.pkRm);
  });

  it("sender and recipient reach the published key schedule", () => {
    const s = setupBaseSender("aes-128-gcm", hex(v.pkRm), hex(v.info), hex(v.skEm));
    expect(s.enc.toString("hex")).toBe(v.enc);
    expect(s.context.key.toString("hex")).toBe(v.key);
    expect(s.context.baseNonce.toString("hex")).toBe(v.base_nonce);
    expect(s.context.exporterSecret.toString("hex")).toBe(v.exporter_secret);
    const r = setupBaseRecipient("aes-128-gcm", hex(v.enc), hex(v.skRm), hex(v.info));
    expect(r.key.toString("hex")).toBe(v.key);
    expect(r.baseNonce.toString("hex")).toBe(v.base_nonce);
  });

  it("produces and opens the published ciphertexts", () => {
    const s = setupBaseSender("aes-128-gcm", hex(v.pkRm), hex(v.info), hex(v.skEm)).context;
    const r = setupBaseRecipient("aes-128-gcm", hex(v.enc), hex(v.skRm), hex(v.info));
    for (const e of v.encryptions) {
      expect(contextSeal(s, hex(e.aad), hex(e.pt), e.seq).toString("hex")).toBe(e.ct);
      expect(contextOpen(r, hex(e.aad), hex(e.ct), e.seq).toString("hex")).toBe(e.pt);
    }
  });
});

describe("HPKE single-shot with AES-256-GCM", () => {
  const r = generateX25519();
  const info = Buffer.from("keymesh test");
  const aad = Buffer.from("message 1");

  it("round-trips and never produces the same box twice", () => {
    const a = sealBase("aes-256-gcm", r.publicKey, info, aad, Buffer.from("hello"));
    const b = sealBase("aes-256-gcm", r.publicKey, info, aad, Buffer.from("hello"));
    expect(a.enc.equals(b.enc)).toBe(false);
    expect(a.ciphertext.length).toBe(5 + 16);
    expect(openBase("aes-256-gcm", r.privateKey, info, aad, a).toString()).toBe("hello");
  });

  it("refuses every flipped bit, another aad, another info, another key and a swapped enc", () => {
    const box = sealBase("aes-256-gcm", r.publicKey, info, aad, Buffer.from("secret body"));
    for (let i = 0; i < box.ciphertext.length; i++) {
      const ct = Buffer.from(box.ciphertext);
      ct[i]! ^= 0x80;
      expect(() => openBase("aes-256-gcm", r.privateKey, info, aad, { enc: box.enc, ciphertext: ct })).toThrow(HpkeOpenError);
    }
    expect(() => openBase("aes-256-gcm", r.privateKey, info, Buffer.from("message 2"), box)).toThrow(HpkeOpenError);
    expect(() => openBase("aes-256-gcm", r.privateKey, Buffer.from("other"), aad, box)).toThrow(HpkeOpenError);
    expect(() => openBase("aes-256-gcm", generateX25519().privateKey, info, aad, box)).toThrow(HpkeOpenError);
    const other = sealBase("aes-256-gcm", r.publicKey, info, aad, Buffer.from("secret body"));
    expect(() => openBase("aes-256-gcm", r.privateKey, info, aad, { enc: other.enc, ciphertext: box.ciphertext })).toThrow(HpkeOpenError);
    expect(() => openBase("aes-256-gcm", r.privateKey, info, aad, { enc: Buffer.alloc(32), ciphertext: box.ciphertext })).toThrow(HpkeOpenError);
    expect(() => openBase("aes-256-gcm", r.privateKey, info, aad, { enc: box.enc.subarray(1), ciphertext: box.ciphertext })).toThrow(HpkeOpenError);
  });
});
