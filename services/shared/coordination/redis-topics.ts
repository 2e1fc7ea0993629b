import type { Redis } from "ioredis";
import type { Topics } from "./types.js";

/** Options for `createRedisTopics`. */
export interface RedisTopicsOptions {
  /** Publishes on this connection. */
  readonly client: Redis;
  /** Opens the one subscriber connection (a connection in subscribe mode can do nothing else). */
  readonly openSubscriber: () => Redis;
  readonly keyPrefix: string;
}

/**
 * Publish/subscribe over Redis PUBLISH/SUBSCRIBE, so every process sharing the Redis sees
 * every message. Delivery is at-most-once and only to processes subscribed at that moment:
 * topics carry notifications ("something new"), never the only copy of data.
 */
export function createRedisTopics(opts: RedisTopicsOptions): Topics & { close(): void } {
  const channelOf = (topic: string) => `${opts.keyPrefix}topic:${topic}`;
  const listeners = new Map<string, Set<(message: string) => void>>();
  let subscriber: Redis | undefined;

  const ensureSubscriber = (): Redis => {
    if (subscriber !== undefined) return subscriber;
    const sub = opts.openSubscriber();
    sub.on("message", (channel: string, message: string) => {
      for (const listener of [...(listeners.get(channel) ?? [])]) {
        try {
          listener(message);
        } catch {
          // A failing listener is its own problem; the others still get the message.
        }
      }
    });
    subscriber = sub;
    return sub;
  };

  return {
    async publish(topic, message) {
      await opts.client.publish(channelOf(topic), message);
    },
    async subscribe(topic, listener) {
      const channel = channelOf(topic);
      const sub = ensureSubscriber();
      let set = listeners.get(channel);
      if (set === undefined) {
        listeners.set(channel, (set = new Set()));
        await sub.subscribe(channel);
      }
      const own = (m: string) => listener(m);
      set.add(own);
      return async () => {
        set.delete(own);
        if (set.size === 0 && listeners.get(channel) === set) {
          listeners.delete(channel);
          await sub.unsubscribe(channel).catch(() => undefined);
        }
      };
    },
    close() {
      subscriber?.disconnect();
      subscriber = undefined;
    },
  };
}
