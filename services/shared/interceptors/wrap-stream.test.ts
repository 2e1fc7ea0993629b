import { describe, expect, it } from "vitest";
import { wrapStream, type StreamOutcome } from "./wrap-stream.js";

describe("wrapStream", () => {
  it("passes return() through to the source and reports an early close", async () => {
    let finallyRan = false;
    const outcomes: string[] = [];
    async function* source() {
      try {
        yield 1;
        yield 2;
      } finally {
        finallyRan = true;
      }
    }
    const it = wrapStream(source(), { end: (o) => outcomes.push(o.kind) })[Symbol.asyncIterator]();
    expect(await it.next()).toEqual({ done: false, value: 1 });
    expect(await it.return?.("stop")).toEqual({ done: true, value: "stop" });
    expect(finallyRan).toBe(true);
    expect(outcomes).toEqual(["closed"]);
  });

  it("does not invent return() or throw() the source lacks", () => {
    const bare: AsyncIterable<number> = { [Symbol.asyncIterator]: () => ({ next: async () => ({ done: true, value: undefined }) }) };
    const it = wrapStream(bare, {})[Symbol.asyncIterator]();
    expect(it.return).toBeUndefined();
    expect(it.throw).toBeUndefined();
  });

  it("maps each message, and reports a failure once with the source's error", async () => {
    const boom = new Error("boom");
    async function* source(): AsyncGenerator<number> {
      yield 1;
      yield 2;
      throw boom;
    }
    const outcomes: StreamOutcome[] = [];
    const seen: number[] = [];
    const wrapped = wrapStream(source(), { message: (m) => m * 10, end: (o) => outcomes.push(o) });
    await expect(
      (async () => {
        for await (const m of wrapped) seen.push(m);
      })(),
    ).rejects.toBe(boom);
    expect(seen).toEqual([10, 20]);
    expect(outcomes).toEqual([{ kind: "error", error: boom }]);
  });

  it("lets `next` replace the source's error", async () => {
    async function* source(): AsyncGenerator<number> {
      throw new Error("driver detail");
    }
    const wrapped = wrapStream(source(), {
      next: (call) => call().catch(() => Promise.reject(new Error("mapped"))),
    });
    await expect(wrapped[Symbol.asyncIterator]().next()).rejects.toThrow("mapped");
  });
});
