import { generateKeyPairSync, randomBytes, randomInt, verify, type KeyObject } from "node:crypto";
import { afterAll, describe, expect, it } from "vitest";
import { Code } from "@connectrpc/connect";
import { toConnectError } from "../shared/errors.js";
import { createSignPool } from "./sign-pool.js";

const THREADS = 3;
const pool = createSignPool({ threads: THREADS, minChunk: 1 });
afterAll(() => pool.close());

/** Distinct payloads of varied lengths (0 to 1024 bytes), so misplaced offsets or order show. */
const payloadsOf = (n: number) => Array.from({ length: n }, () => randomBytes(randomInt(0, 1025)));
/** Indexes of payloads whose signature does not verify under `publicKey`. */
const badSignatures = (publicKey: KeyObject, payloads: Uint8Array[], signatures: Buffer) =>
  payloads.flatMap((p, i) => (verify(null, p, publicKey, signatures.subarray(64 * i, 64 * i + 64)) ? [] : [i]));
const failureOf = async (p: Promise<unknown>) => toConnectError(await p.then(() => expect.fail("expected a failure"), (e: unknown) => e));

describe("sign pool", () => {
  it("returns every signature, in order, across chunk boundaries", async () => {
    const { privateKey, publicKey } = generateKeyPairSync("ed25519");
    for (const n of [1, 2, THREADS, 1000, 10_000]) {
      const payloads = payloadsOf(n);
      const before = payloads.map((p) => Buffer.from(p));
      const signatures = await pool.sign(privateKey, payloads);
      expect(signatures.length, `${n} payloads`).toBe(64 * n);
      expect(badSignatures(publicKey, payloads, signatures), `${n} payloads`).toEqual([]);
      // The caller's payloads are copied, never transferred away or changed.
      expect(payloads.every((p, i) => before[i]!.equals(p))).toBe(true);
    }
  });

  it("keeps each concurrent batch on its own key", async () => {
    const keys = Array.from({ length: 6 }, () => generateKeyPairSync("ed25519"));
    const batches = keys.map(() => payloadsOf(400));
    const results = await Promise.all(keys.map((k, i) => pool.sign(k.privateKey, batches[i]!)));
    keys.forEach((k, i) => expect(badSignatures(k.publicKey, batches[i]!, results[i]!), `batch ${i}`).toEqual([]));
  });

  it("fails the batch of a thread that dies, replaces the thread and keeps serving", async () => {
    const own = createSignPool({ threads: 2, minChunk: 1 });
    try {
      const { privateKey, publicKey } = generateKeyPairSync("ed25519");
      const other = generateKeyPairSync("ed25519");
      // Both threads are up once each has signed a chunk.
      await own.sign(privateKey, payloadsOf(2));
      // Two chunks of 5000 (about 0.2 s each): the first thread is stopped while it signs one.
      const doomed = failureOf(own.sign(privateKey, payloadsOf(10_000)));
      const bystander = own.sign(other.privateKey, payloadsOf(500));
      const victim = own.workers[0]!;
      await new Promise((resolve) => setTimeout(resolve, 20));
      await victim.terminate();
      const err = await doomed;
      expect(err.code).toBe(Code.Unavailable);
      expect(err.rawMessage).toMatch(/signing thread stopped .* sign it again/);
      const der = privateKey.export({ format: "der", type: "pkcs8" });
      expect(String(err.cause) + err.message).not.toContain(der.subarray(16).toString("hex"));
      // The batch queued behind it, with another key, is signed by the survivor and the replacement.
      const queued = payloadsOf(500);
      expect(badSignatures(other.publicKey, queued, await own.sign(other.privateKey, queued))).toEqual([]);
      expect((await bystander).length).toBe(64 * 500);
      expect(own.workers[0]).not.toBe(victim);
      expect(own.workers.every((w) => w.threadId > 0)).toBe(true);
      const after = payloadsOf(1000);
      expect(badSignatures(publicKey, after, await own.sign(privateKey, after))).toEqual([]);
    } finally {
      await own.close();
    }
  });

  it("answers a key the threads cannot sign with, and goes on", async () => {
    const x25519 = generateKeyPairSync("x25519").privateKey;
    const err = await failureOf(pool.sign(x25519, payloadsOf(5)));
    expect(err.code).toBe(Code.Internal);
    expect(String(err.cause)).toMatch(/a signing thread could not sign/);
    const { privateKey, publicKey } = generateKeyPairSync("ed25519");
    const payloads = payloadsOf(5);
    expect(badSignatures(publicKey, payloads, await pool.sign(privateKey, payloads))).toEqual([]);
  });

  it("close() refuses what is in flight and leaves no thread running", async () => {
    const own = createSignPool({ threads: 2 });
    const threads = own.workers;
    expect(threads).toHaveLength(2);
    const { privateKey } = generateKeyPairSync("ed25519");
    const inFlight = failureOf(own.sign(privateKey, payloadsOf(10_000)));
    await own.close();
    expect((await inFlight).code).toBe(Code.Unavailable);
    expect(threads.every((w) => w.threadId === -1)).toBe(true);
    expect((await failureOf(own.sign(privateKey, payloadsOf(1)))).code).toBe(Code.Unavailable);
  });
});
