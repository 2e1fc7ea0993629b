import { randomBytes } from "node:crypto";
import { Redis } from "ioredis";

/**
 * The shared development Redis for integration tests. Tests isolate themselves with a
 * unique key prefix and remove their keys afterwards. An unreachable Redis fails the test.
 */

/** KEYMESH_TEST_REDIS_URL, default the development server on 127.0.0.1:6379. */
export function testRedisUrl(): string {
  return process.env.KEYMESH_TEST_REDIS_URL ?? "redis://127.0.0.1:6379";
}

/** A key prefix no other test run uses: `keymesh-test:<label>:<random>:`. */
export function uniquePrefix(label = "t"): string {
  return `keymesh-test:${label}:${randomBytes(5).toString("hex")}:`;
}

/** Checks that the Redis at `url` answers, with a clear message when it does not. */
export async function requireRedis(url = testRedisUrl()): Promise<void> {
  const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, connectTimeout: 3_000, retryStrategy: () => null });
  client.on("error", () => undefined);
  try {
    await client.connect();
    await client.ping();
  } catch (err) {
    throw new Error(`Redis is not reachable at ${url} (set KEYMESH_TEST_REDIS_URL); integration tests need it`, {
      cause: err,
    });
  } finally {
    client.disconnect();
  }
}

/** Deletes every key starting with `prefix` (SCAN, so it is safe on a shared server). */
export async function deleteKeys(prefix: string, url = testRedisUrl()): Promise<void> {
  const client = new Redis(url, { maxRetriesPerRequest: 1 });
  client.on("error", () => undefined);
  try {
    let cursor = "0";
    do {
      const [next, keys] = await client.scan(cursor, "MATCH", `${prefix}*`, "COUNT", 500);
      cursor = next;
      if (keys.length > 0) await client.del(...keys);
    } while (cursor !== "0");
  } finally {
    client.disconnect();
  }
}
