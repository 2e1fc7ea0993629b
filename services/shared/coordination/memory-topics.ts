import type { Topics } from "./types.js";

/** Publish/subscribe inside this process: the embedded default and unit tests. */
export function createMemoryTopics(): Topics {
  const listeners = new Map<string, Set<(message: string) => void>>();
  return {
    async publish(topic, message) {
      for (const listener of [...(listeners.get(topic) ?? [])]) {
        // One listener that throws must not keep the message from the others.
        queueMicrotask(() => listener(message));
      }
    },
    async subscribe(topic, listener) {
      let set = listeners.get(topic);
      if (set === undefined) listeners.set(topic, (set = new Set()));
      const own = (m: string) => listener(m);
      set.add(own);
      return async () => {
        set.delete(own);
        if (set.size === 0) listeners.delete(topic);
      };
    },
  };
}
