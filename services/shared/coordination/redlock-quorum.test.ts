import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startRedisNode, type RedisNode } from "../../../test/support/redis-nodes.js";
import { uniquePrefix } from "../../../test/support/redis.js";
import { UnavailableError, createCoordinator, LeaseLostError, type Coordinator } from "./index.js";

/** Retries `fn` until it returns a value (not null) or throws no more, for up to `ms`. */
async function eventually<T>(fn: () => Promise<T | null>, ms = 8_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      const v = await fn();
      if (v !== null) return v;
    } catch (err) {
      if (Date.now() > deadline) throw err;
    }
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await sleep(100);
  }
}

describe("Redlock over three Redis nodes", () => {
  let nodes: RedisNode[] = [];
  let a: Coordinator;
  let b: Coordinator;
  const keyPrefix = uniquePrefix("quorum");

  beforeAll(async () => {
    nodes = await Promise.all([startRedisNode(), startRedisNode(), startRedisNode()]);
    const redisUrl = nodes.map((n) => n.url).join(",");
    a = createCoordinator({ redisUrl, keyPrefix });
    b = createCoordinator({ redisUrl, keyPrefix });
  });
  afterAll(async () => {
    await a?.close();
    await b?.close();
    await Promise.all(nodes.map((n) => n.stop()));
  });

  it("grants a lease on all three and refuses it to a second process", async () => {
    const lease = await a.leases.tryAcquire("k-all", 5_000);
    expect(lease).not.toBeNull();
    expect(await b.leases.tryAcquire("k-all", 5_000)).toBeNull();
    await lease!.release();
    expect(await b.leases.tryAcquire("k-all", 5_000)).not.toBeNull();
  });

  it("still works with one node stopped (2 of 3), and contention is still null", async () => {
    await nodes[0]!.stop();
    const lease = await a.leases.tryAcquire("k-two", 5_000);
    expect(lease).not.toBeNull();
    expect(await b.leases.tryAcquire("k-two", 5_000)).toBeNull();
    await lease!.renew(5_000);
    await lease!.release();
    expect(await b.leases.tryAcquire("k-two", 5_000)).not.toBeNull();
  });

  it("throws UnavailableError with two nodes down, and held leases are lost", async () => {
    const held = await a.leases.tryAcquire("k-held", 10_000);
    expect(held).not.toBeNull();
    await nodes[1]!.kill();
    const started = Date.now();
    await expect(b.leases.tryAcquire("k-none", 5_000)).rejects.toBeInstanceOf(UnavailableError);
    expect(Date.now() - started).toBeLessThan(3_000);
    const err = await held!.renew(10_000).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(LeaseLostError);
    expect((err as LeaseLostError).reason).toBe("unavailable");
  });

  it("recovers once the nodes are back", async () => {
    await nodes[0]!.restart();
    await nodes[1]!.restart();
    const lease = await eventually(() => a.leases.tryAcquire("k-back", 5_000));
    expect(await b.leases.tryAcquire("k-back", 5_000)).toBeNull();
    await lease.release();
  });
});
