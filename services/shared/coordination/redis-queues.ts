import type { Redis } from "ioredis";
import { setTimeout } from "node:timers/promises";
import { assertPayload, CONSUME_DEFAULTS, toCoordinationError } from "./common.js";
import type { ConsumeOptions, JobQueue, JobQueues, QueueDepth, QueueEntry, QueueHandler } from "./types.js";

/**
 * Queues as Redis Streams with consumer groups: XADD to enqueue, XREADGROUP to receive,
 * XACK after the handler resolved, XAUTOCLAIM to take over entries that stayed pending
 * longer than `idleClaimMs` with a consumer that died.
 *
 * Streams live on the first Redis node only: they are not quorum-replicated like leases.
 * In production the first entry of KEYMESH_REDIS_URL should be the primary (with its own
 * replication/persistence); losing it loses queued entries, never leases' safety.
 */

/** What the queues need from the coordinator. */
export interface RedisQueueContext {
  /** Client for ordinary commands (the first node). */
  readonly client: Redis;
  readonly keyPrefix: string;
  /** A connection of its own for one consumer's blocking reads. */
  openReader(blockMs: number): Redis;
  /** Resolves once `client` made its first connection attempt. */
  started(client: Redis): Promise<void>;
  /** Aborted when the coordinator closes. */
  readonly closed: AbortSignal;
}

type RawEntry = [id: string, fields: string[] | null];

function toPayload(fields: string[]): Record<string, string> {
  const payload: Record<string, string> = {};
  for (let i = 0; i + 1 < fields.length; i += 2) payload[fields[i]!] = fields[i + 1]!;
  return payload;
}

/** Parses an XREADGROUP reply: [[stream, [[id, fields], ...]]] or null. */
function readReply(reply: unknown): RawEntry[] {
  if (!Array.isArray(reply) || reply.length === 0) return [];
  return ((reply[0] as [string, RawEntry[]])[1] ?? []) as RawEntry[];
}

function createRedisQueue(name: string, ctx: RedisQueueContext): JobQueue {
  const key = `${ctx.keyPrefix}queue:${name}`;
  const { client } = ctx;
  let inFlight = 0;

  async function ensureGroup(group: string): Promise<void> {
    try {
      await client.xgroup("CREATE", key, group, "0", "MKSTREAM");
    } catch (err) {
      if (!(err instanceof Error && err.message.startsWith("BUSYGROUP"))) throw err;
    }
  }

  return {
    name,

    async enqueue(payload) {
      assertPayload(payload);
      await ctx.started(client);
      try {
        const id = await client.xadd(key, "*", ...Object.entries(payload).flat());
        return id as string;
      } catch (err) {
        throw toCoordinationError(err, `enqueue on ${name}`);
      }
    },

    async consume(group: string, consumer: string, handler: QueueHandler, opts: ConsumeOptions) {
      const blockMs = opts.blockMs ?? CONSUME_DEFAULTS.blockMs;
      const idleClaimMs = opts.idleClaimMs ?? CONSUME_DEFAULTS.idleClaimMs;
      const count = opts.count ?? CONSUME_DEFAULTS.count;
      const signal = AbortSignal.any([opts.signal, ctx.closed]);
      const reader = ctx.openReader(blockMs);
      const stopReader = () => reader.disconnect();
      signal.addEventListener("abort", stopReader, { once: true });

      let groupReady = false;
      let ownFrom: string | null = "0"; // first, our own entries left pending by an earlier run
      let claimCursor = "0-0";

      const handle = async ([id, fields]: RawEntry, redelivered: boolean) => {
        inFlight++;
        try {
          if (fields !== null) {
            const entry: QueueEntry = { id, payload: toPayload(fields), redelivered };
            try {
              await handler(entry);
            } catch (err) {
              opts.onError?.(err, entry);
              return; // stays pending; redelivered after idleClaimMs
            }
          }
          // Acknowledged after the handler resolved (or at once for an entry deleted meanwhile).
          await client.xack(key, group, id).catch((err: unknown) => opts.onError?.(toCoordinationError(err, "ack")));
        } finally {
          inFlight--;
        }
      };

      try {
        await ctx.started(client);
        await ctx.started(reader);
        while (!signal.aborted) {
          try {
            if (!groupReady) {
              await ensureGroup(group);
              groupReady = true;
            }
            let batch: RawEntry[];
            let redelivered = true;
            if (ownFrom !== null) {
              batch = readReply(
                await client.xreadgroup("GROUP", group, consumer, "COUNT", count, "STREAMS", key, ownFrom),
              );
              ownFrom = batch.length === 0 ? null : batch[batch.length - 1]![0];
            } else {
              const claimed = (await client.xautoclaim(key, group, consumer, idleClaimMs, claimCursor, "COUNT", count)) as [
                string,
                RawEntry[],
              ];
              claimCursor = claimed[0];
              batch = claimed[1];
              if (batch.length === 0) {
                redelivered = false;
                batch = readReply(
                  await reader.xreadgroup("GROUP", group, consumer, "COUNT", count, "BLOCK", blockMs, "STREAMS", key, ">"),
                );
              }
            }
            for (const raw of batch) {
              if (signal.aborted) break;
              await handle(raw, redelivered);
            }
          } catch (err) {
            if (signal.aborted) break;
            if (err instanceof Error && err.message.startsWith("NOGROUP")) groupReady = false;
            opts.onError?.(toCoordinationError(err, `consume on ${name}`));
            await setTimeout(Math.min(blockMs, 1_000), undefined, { signal }).catch(() => undefined);
          }
        }
      } finally {
        signal.removeEventListener("abort", stopReader);
        reader.disconnect();
      }
    },

    pending: () => inFlight,

    async depth(group: string): Promise<QueueDepth> {
      await ctx.started(client);
      try {
        const length = await client.xlen(key);
        const groups = (await client.xinfo("GROUPS", key).catch(() => [])) as unknown[][];
        for (const raw of groups) {
          const info = toPayloadLoose(raw);
          if (info.name !== group) continue;
          const pending = Number(info.pending ?? 0);
          const lag = info.lag;
          const read = info["entries-read"];
          const undelivered =
            lag !== null && lag !== undefined ? Number(lag) : read !== null && read !== undefined ? length - Number(read) : length;
          return { undelivered, pending };
        }
        return { undelivered: length, pending: 0 };
      } catch (err) {
        throw toCoordinationError(err, `depth of ${name}`);
      }
    },
  };
}

/** XINFO replies alternate names and values of mixed types. */
function toPayloadLoose(raw: unknown[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (let i = 0; i + 1 < raw.length; i += 2) out[String(raw[i])] = raw[i + 1];
  return out;
}

/** Named queues on Redis Streams. */
export function createRedisQueues(ctx: RedisQueueContext): JobQueues {
  const queues = new Map<string, JobQueue>();
  return {
    queue(name: string) {
      let q = queues.get(name);
      if (q === undefined) {
        q = createRedisQueue(name, ctx);
        queues.set(name, q);
      }
      return q;
    },
  };
}
