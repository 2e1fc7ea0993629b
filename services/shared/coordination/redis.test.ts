import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { describeCoordinatorContract } from "../../../test/support/coordinator-contract.js";
import { freePort } from "../../../test/support/redis-nodes.js";
import { deleteKeys, requireRedis, testRedisUrl, uniquePrefix } from "../../../test/support/redis.js";
import {
  UnavailableError,
  createCoordinator,
  createRedisCoordinator,
  LeaseLostError,
  type Coordinator,
} from "./index.js";

describeCoordinatorContract("redis", async () => {
  await requireRedis();
  const keyPrefix = uniquePrefix("contract");
  const opened: Coordinator[] = [];
  return {
    open() {
      const c = createRedisCoordinator({ urls: [testRedisUrl()], keyPrefix });
      opened.push(c);
      return c;
    },
    kill: (c) => c.close(),
    async cleanup() {
      await Promise.all(opened.map((c) => c.close()));
      await deleteKeys(keyPrefix);
    },
  };
});

describe("redis coordinator specifics", () => {
  const keyPrefix = uniquePrefix("redis");
  let c: Coordinator;
  let raw: Redis;
  beforeAll(async () => {
    await requireRedis();
    c = createCoordinator({ redisUrl: testRedisUrl(), keyPrefix });
    raw = new Redis(testRedisUrl());
  });
  afterAll(async () => {
    await c?.close();
    raw?.disconnect();
    await deleteKeys(keyPrefix);
  });

  it("is chosen for a Redis URL and stores leases as prefixed keys with a TTL", async () => {
    expect(c.kind).toBe("redis");
    const lease = await c.leases.tryAcquire("key-7", 10_000);
    expect(await raw.get(`${keyPrefix}lease:key-7`)).toBe(lease!.value);
    const ttl = await raw.pttl(`${keyPrefix}lease:key-7`);
    expect(ttl).toBeGreaterThan(9_000);
    expect(ttl).toBeLessThanOrEqual(10_000);
    await lease!.release();
    expect(await raw.exists(`${keyPrefix}lease:key-7`)).toBe(0);
  });

  it("reports a lease taken over behind the holder's back as lost (taken)", async () => {
    const lease = await c.leases.tryAcquire("key-8", 10_000);
    await raw.set(`${keyPrefix}lease:key-8`, "someone-else", "PX", 10_000);
    const err = await lease!.renew(10_000).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(LeaseLostError);
    expect((err as LeaseLostError).reason).toBe("taken");
    await lease!.release();
    expect(await raw.get(`${keyPrefix}lease:key-8`)).toBe("someone-else");
  });

  it("keeps queue entries in a stream on the first node", async () => {
    const id = await c.queues.queue("jobs").enqueue({ a: "1" });
    const entries = await raw.xrange(`${keyPrefix}queue:jobs`, "-", "+");
    expect(entries).toEqual([[id, ["a", "1"]]]);
  });
});

describe("redis that is down", () => {
  it("fails fast with UnavailableError, distinct from contention", async () => {
    const url = `redis://127.0.0.1:${await freePort()}`;
    const c = createRedisCoordinator({ urls: [url], keyPrefix: uniquePrefix("down") });
    try {
      const started = Date.now();
      const err = await c.leases.tryAcquire("k", 1_000).then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(UnavailableError);
      expect(err).toBeInstanceOf(UnavailableError);
      expect((err as UnavailableError).dependency).toBe("coordination");
      await expect(c.queues.queue("q").enqueue({ a: "1" })).rejects.toBeInstanceOf(UnavailableError);
      expect(Date.now() - started).toBeLessThan(4_000);
    } finally {
      await c.close();
    }
  });
});
