import { randomBytes } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LeaseLostError } from "../../services/shared/errors.js";
import type { Coordinator, QueueEntry } from "../../services/shared/coordination/types.js";

/**
 * The behaviour every Coordinator adapter must have, run against each of them so the
 * in-process adapter cannot drift from the Redis one.
 */

/** How a contract run reaches one adapter. */
export interface CoordinatorFixture {
  /** A coordinator on the shared backend; for Redis each call is a separate "process". */
  open(): Coordinator;
  /** Makes the consumer running under `ctl` on `c` die without acknowledging anything. */
  kill(c: Coordinator, ctl: AbortController): Promise<void>;
  /** Frees everything the run created. */
  cleanup(): Promise<void>;
}

const name = (label: string) => `${label}-${randomBytes(4).toString("hex")}`;
const never = () => new Promise<void>(() => undefined);

/** Resolves with the first `n` entries `consume` hands to `handler`, then stops it. */
async function collect(c: Coordinator, queue: string, group: string, consumer: string, n: number, idleClaimMs = 30_000) {
  const seen: QueueEntry[] = [];
  const ctl = new AbortController();
  await c.queues.queue(queue).consume(
    group,
    consumer,
    async (e) => {
      seen.push(e);
      if (seen.length >= n) ctl.abort();
    },
    { signal: ctl.signal, blockMs: 50, idleClaimMs },
  );
  return seen;
}

/** Registers the contract tests for one adapter. */
export function describeCoordinatorContract(label: string, setup: () => Promise<CoordinatorFixture>): void {
  describe(`${label}: coordinator contract`, () => {
    let fx: CoordinatorFixture;
    let c: Coordinator;
    beforeAll(async () => {
      fx = await setup();
      c = fx.open();
    });
    afterAll(async () => {
      await fx?.cleanup();
    });

    describe("leases", () => {
      it("are exclusive: contention returns null, other resources are independent", async () => {
        const r = name("res");
        const lease = await c.leases.tryAcquire(r, 5_000);
        expect(lease).not.toBeNull();
        expect(lease!.resource).toBe(r);
        expect(lease!.expiresAt).toBeGreaterThan(Date.now());
        expect(await c.leases.tryAcquire(r, 5_000)).toBeNull();
        expect(await c.leases.tryAcquire(`${r}-other`, 5_000)).not.toBeNull();
        await lease!.release();
      });

      it("grant exactly one of many simultaneous attempts", async () => {
        const r = name("race");
        const results = await Promise.all(Array.from({ length: 20 }, () => c.leases.tryAcquire(r, 5_000)));
        expect(results.filter((l) => l !== null)).toHaveLength(1);
      });

      it("expire: another holder gets the resource, the old one's renew throws LeaseLostError", async () => {
        const r = name("exp");
        const old = await c.leases.tryAcquire(r, 150);
        expect(old).not.toBeNull();
        await sleep(250);
        const next = await c.leases.tryAcquire(r, 5_000);
        expect(next).not.toBeNull();
        expect(next!.value).not.toBe(old!.value);
        const err = await old!.renew(5_000).then(() => undefined, (e: unknown) => e);
        expect(err).toBeInstanceOf(LeaseLostError);
        expect((err as LeaseLostError).reason).toBe("expired");
        // The stale holder's release must not free the new holder's lease.
        await old!.release();
        expect(await c.leases.tryAcquire(r, 5_000)).toBeNull();
      });

      it("renew extends the lease past its first TTL", async () => {
        const r = name("renew");
        const lease = await c.leases.tryAcquire(r, 1_000);
        const firstExpiry = lease!.expiresAt;
        await sleep(300);
        await lease!.renew(2_000);
        expect(lease!.expiresAt).toBeGreaterThan(firstExpiry);
        await sleep(Math.max(0, firstExpiry - Date.now()) + 100);
        expect(await c.leases.tryAcquire(r, 1_000)).toBeNull();
        await lease!.release();
      });

      it("release frees at once, is idempotent, and a released lease cannot be renewed", async () => {
        const r = name("rel");
        const lease = await c.leases.tryAcquire(r, 5_000);
        await lease!.release();
        await lease!.release();
        const again = await c.leases.tryAcquire(r, 5_000);
        expect(again).not.toBeNull();
        await expect(lease!.renew(1_000)).rejects.toBeInstanceOf(LeaseLostError);
      });

      it("reject a TTL that is not a positive integer", async () => {
        await expect(c.leases.tryAcquire(name("ttl"), 0)).rejects.toBeInstanceOf(RangeError);
        await expect(c.leases.tryAcquire(name("ttl"), 1.5)).rejects.toBeInstanceOf(RangeError);
      });
    });

    describe("queues", () => {
      it("deliver entries with their payload and acknowledge them after the handler", async () => {
        const q = name("q");
        const id = await c.queues.queue(q).enqueue({ job: "rewrap", table: "keyring_keys" });
        const seen = await collect(c, q, "workers", "w1", 1);
        expect(seen).toEqual([{ id, payload: { job: "rewrap", table: "keyring_keys" }, redelivered: false }]);
        expect(await c.queues.queue(q).depth("workers")).toEqual({ undelivered: 0, pending: 0 });
        expect(c.queues.queue(q).pending()).toBe(0);
      });

      it("give every group every entry, also to a group created later", async () => {
        const q = name("q");
        const queue = c.queues.queue(q);
        const ids = [await queue.enqueue({ n: "1" }), await queue.enqueue({ n: "2" })];
        expect(await queue.depth("late")).toEqual({ undelivered: 2, pending: 0 });
        expect((await collect(c, q, "a", "x", 2)).map((e) => e.id)).toEqual(ids);
        expect((await collect(c, q, "late", "x", 2)).map((e) => e.id)).toEqual(ids);
      });

      it("share a group's entries between consumers, each entry once", async () => {
        const q = name("q");
        const queue = c.queues.queue(q);
        for (let i = 0; i < 20; i++) await queue.enqueue({ n: String(i) });
        const handled: string[] = [];
        const ctl = new AbortController();
        const run = (consumer: string) =>
          queue.consume(
            "g",
            consumer,
            async (e) => {
              handled.push(e.payload.n!);
              await sleep(5);
              if (handled.length === 20) ctl.abort();
            },
            { signal: ctl.signal, blockMs: 50, count: 2 },
          );
        await Promise.all([run("c1"), run("c2")]);
        expect([...handled].sort((a, b) => Number(a) - Number(b))).toEqual(Array.from({ length: 20 }, (_, i) => String(i)));
        expect(await queue.depth("g")).toEqual({ undelivered: 0, pending: 0 });
      });

      it("keep a failed entry pending and redeliver it after idleClaimMs", async () => {
        const q = name("q");
        const queue = c.queues.queue(q);
        const id = await queue.enqueue({ n: "1" });
        const attempts: QueueEntry[] = [];
        const errors: unknown[] = [];
        const ctl = new AbortController();
        await queue.consume(
          "g",
          "w",
          async (e) => {
            attempts.push(e);
            if (attempts.length === 1) throw new Error("transient failure");
            ctl.abort();
          },
          { signal: ctl.signal, blockMs: 50, idleClaimMs: 200, onError: (err) => errors.push(err) },
        );
        expect(attempts.map((e) => [e.id, e.redelivered])).toEqual([
          [id, false],
          [id, true],
        ]);
        expect(errors).toHaveLength(1);
        expect(await queue.depth("g")).toEqual({ undelivered: 0, pending: 0 });
      });

      it("hand the entry of a consumer that died unacknowledged to another after idleClaimMs", async () => {
        const q = name("q");
        const a = fx.open();
        const b = fx.open();
        const id = await a.queues.queue(q).enqueue({ n: "1" });
        const ctlA = new AbortController();
        let received!: () => void;
        const got = new Promise<void>((r) => (received = r));
        void a.queues.queue(q).consume("g", "A", async () => (received(), never()), {
          signal: ctlA.signal,
          blockMs: 50,
          idleClaimMs: 300,
        });
        await got;
        expect(a.queues.queue(q).pending()).toBe(1);
        const diedAt = Date.now();
        await fx.kill(a, ctlA);
        const seen = await collect(b, q, "g", "B", 1, 300);
        expect(Date.now() - diedAt).toBeGreaterThanOrEqual(250);
        expect(seen).toEqual([{ id, payload: { n: "1" }, redelivered: true }]);
        expect(await b.queues.queue(q).depth("g")).toEqual({ undelivered: 0, pending: 0 });
      });

      it("give a restarted consumer its own unacknowledged entries first", async () => {
        const q = name("q");
        const a = fx.open();
        const id = await a.queues.queue(q).enqueue({ n: "1" });
        const ctlA = new AbortController();
        let received!: () => void;
        const got = new Promise<void>((r) => (received = r));
        void a.queues.queue(q).consume("g", "A", async () => (received(), never()), { signal: ctlA.signal, blockMs: 50 });
        await got;
        await fx.kill(a, ctlA);
        const again = fx.open();
        const seen = await collect(again, q, "g", "A", 1, 60_000);
        expect(seen).toEqual([{ id, payload: { n: "1" }, redelivered: true }]);
      });

      it("stop consuming promptly when the signal aborts", async () => {
        const ctl = new AbortController();
        const started = Date.now();
        const loop = c.queues.queue(name("q")).consume("g", "w", async () => undefined, { signal: ctl.signal, blockMs: 5_000 });
        await sleep(100);
        ctl.abort();
        await loop;
        expect(Date.now() - started).toBeLessThan(2_000);
      });

      it("reject an empty payload", async () => {
        await expect(c.queues.queue(name("q")).enqueue({})).rejects.toBeInstanceOf(TypeError);
      });
    });
  });
}
