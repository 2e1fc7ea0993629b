import { on } from "node:events";
import { EventEmitter } from "node:events";
import type { Topics } from "../shared/coordination/types.js";
import type { MessageRow } from "./store.js";

/** A new message's metadata, as watchers see it (never the box, never the body). */
export type MessageNotice = Omit<MessageRow, "enc" | "ciphertext">;

/**
 * New-message notifications per recipient, over the coordinator's topics: Redis pub/sub when
 * KEYMESH_REDIS_URL is set, so a message sent through one messages process reaches a watcher
 * on another; in-process otherwise.
 */
export interface MessageFeed {
  publish(row: MessageRow): Promise<void>;
  /** The recipient's new messages from now until `signal` aborts. */
  watch(recipientId: string, signal: AbortSignal): AsyncIterable<MessageNotice>;
}

const topicOf = (recipientId: string) => `messages.inbox.${recipientId}`;

function parseNotice(text: string): MessageNotice | undefined {
  try {
    const n = JSON.parse(text) as MessageNotice;
    return typeof n.id === "string" && typeof n.recipientId === "string" ? n : undefined;
  } catch {
    return undefined;
  }
}

export function createMessageFeed(topics: Topics): MessageFeed {
  return {
    async publish(row) {
      const { enc: _enc, ciphertext: _ct, ...notice } = row;
      await topics.publish(topicOf(row.recipientId), JSON.stringify(notice));
    },

    async *watch(recipientId, signal) {
      // The listener only queues; the generator drains at the consumer's pace.
      const events = new EventEmitter();
      const unsubscribe = await topics.subscribe(topicOf(recipientId), (text) => {
        const notice = parseNotice(text);
        if (notice !== undefined && notice.recipientId === recipientId) events.emit("notice", notice);
      });
      try {
        for await (const [notice] of on(events, "notice", { signal })) yield notice as MessageNotice;
      } catch (err) {
        if (!signal.aborted) throw err;
      } finally {
        await unsubscribe();
      }
    },
  };
}
