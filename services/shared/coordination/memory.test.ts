import { describe, expect, it } from "vitest";
import { describeCoordinatorContract } from "../../../test/support/coordinator-contract.js";
import { createCoordinator, createMemoryCoordinator, LeaseLostError } from "./index.js";

describeCoordinatorContract("memory", async () => {
  const shared = createMemoryCoordinator();
  return {
    open: () => shared,
    kill: async (_c, ctl) => ctl.abort(),
    cleanup: () => shared.close(),
  };
});

describe("memory leases on a driven clock", () => {
  it("expire exactly at their TTL and renew from the current time", async () => {
    let now = 1_000;
    const c = createMemoryCoordinator({ now: () => now });
    const lease = await c.leases.tryAcquire("k", 100);
    expect(lease!.expiresAt).toBe(1_100);
    now = 1_099;
    expect(await c.leases.tryAcquire("k", 100)).toBeNull();
    await lease!.renew(100);
    expect(lease!.expiresAt).toBe(1_199);
    now = 1_199;
    const next = await c.leases.tryAcquire("k", 100);
    expect(next).not.toBeNull();
    await expect(lease!.renew(100)).rejects.toMatchObject({ name: "LeaseLostError", reason: "expired" });
    await expect(lease!.renew(100)).rejects.toBeInstanceOf(LeaseLostError);
  });
});

describe("createCoordinator", () => {
  it("is in-process without a Redis URL", async () => {
    const c = createCoordinator({ redisUrl: " , " });
    expect(c.kind).toBe("memory");
    await c.close();
  });

  it("ends consumer loops on close", async () => {
    const c = createMemoryCoordinator();
    const loop = c.queues.queue("q").consume("g", "w", async () => undefined, { signal: new AbortController().signal });
    await c.close();
    await loop;
  });
});
