import { create } from "@bufbuild/protobuf";
import type { HandlerContext } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { SignStreamRequestSchema, type SignStreamRequest } from "../../gen/keymesh/signing/v1/signing_service_pb.js";
import { createSigningHandler } from "./handler.js";

describe("SignStream", () => {
  it("holds at most its cap of batches and stops reading until replies are taken", async () => {
    let started = 0;
    const gates: (() => void)[] = [];
    const signer = {
      signBatch: async (_lease: unknown, payloads: readonly Uint8Array[]) => {
        started++;
        await new Promise<void>((resolve) => gates.push(resolve));
        return Buffer.alloc(64 * payloads.length);
      },
    };
    const handler = createSigningHandler({ signer, publicKeyOf: async () => new Uint8Array(32), runBatches: async function* () {}, streamMaxInFlight: 3 });
    let read = 0;
    async function* requests(): AsyncGenerator<SignStreamRequest> {
      for (let i = 0; i < 10; i++) {
        read++;
        yield create(SignStreamRequestSchema, { batch: { batchId: `b${i}`, keyId: "k", fence: 1n, leaseId: "l", leaseToken: "t", records: { ids: [BigInt(i)], payloadLengths: [1], payloads: new Uint8Array(1) } } });
      }
    }
    const replies = handler.signStream(requests(), {} as HandlerContext)[Symbol.asyncIterator]();
    const first = replies.next();
    await new Promise((r) => setTimeout(r, 50));
    // Three batches started; the stream has not read further (the sender is pushed back).
    expect(started).toBe(3);
    expect(read).toBeLessThanOrEqual(4);
    gates.shift()!();
    expect((await first).value?.batchId).toBe("b0");
    // The slot frees when the transport asks for the next reply (it has taken this one).
    const ids = ["b0"];
    for (let i = 1; i < 10; i++) {
      const next = replies.next();
      await new Promise((r) => setTimeout(r, 10));
      expect(started - ids.length).toBeLessThanOrEqual(3);
      while (gates.length > 0) gates.shift()!();
      ids.push((await next).value!.batchId);
    }
    expect(ids.sort()).toEqual(Array.from({ length: 10 }, (_, i) => `b${i}`).sort());
    expect((await replies.next()).done).toBe(true);
  });
});
