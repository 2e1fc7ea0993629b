import type { Database } from "../shared/storage/database.js";

/** A stored message: metadata and the HPKE box, never the plaintext. */
export interface MessageRow {
  readonly id: string;
  readonly senderId: string;
  readonly senderUsername: string;
  readonly recipientId: string;
  readonly recipientUsername: string;
  readonly recipientKeyId: string;
  readonly enc: Buffer;
  readonly ciphertext: Buffer;
  readonly size: number;
  readonly read: boolean;
  readonly sentAt: number;
}

/**
 * Persistence of inboxes. Listing reads the replica (a read-only RPC); reading one message
 * and every write use the primary, so a recipient can always open what they were just told
 * about, whatever the replica's lag.
 */
export interface MessageStore {
  insert(row: MessageRow): Promise<void>;
  /** The recipient's messages with ids below `beforeId` ("" = from the newest), newest first. */
  list(recipientId: string, beforeId: string, limit: number, unreadOnly: boolean): Promise<MessageRow[]>;
  /** One of the recipient's messages; undefined when it does not exist or is someone else's. */
  get(recipientId: string, id: string): Promise<MessageRow | undefined>;
  markRead(recipientId: string, id: string): Promise<void>;
  /** False when there was no such message of the recipient's. */
  delete(recipientId: string, id: string): Promise<boolean>;
}

interface Row {
  id: string;
  sender_id: string;
  sender_username: string;
  recipient_id: string;
  recipient_username: string;
  recipient_key_id: string;
  enc: Uint8Array;
  ciphertext: Uint8Array;
  size: number;
  is_read: number | boolean;
  sent_at: number | string;
}

const toRow = (r: Row): MessageRow => ({
  id: r.id,
  senderId: r.sender_id,
  senderUsername: r.sender_username,
  recipientId: r.recipient_id,
  recipientUsername: r.recipient_username,
  recipientKeyId: r.recipient_key_id,
  enc: Buffer.from(r.enc),
  ciphertext: Buffer.from(r.ciphertext),
  size: Number(r.size),
  read: Boolean(r.is_read),
  sentAt: Number(r.sent_at),
});

const META = ["id", "sender_id", "sender_username", "recipient_id", "recipient_username", "recipient_key_id", "size", "is_read", "sent_at"];

/** The knex implementation (MySQL/MariaDB and SQLite). */
export function createMessageStore(db: Database): MessageStore {
  return {
    async insert(m) {
      await db.primary("messages").insert({
        id: m.id,
        sender_id: m.senderId,
        sender_username: m.senderUsername,
        recipient_id: m.recipientId,
        recipient_username: m.recipientUsername,
        recipient_key_id: m.recipientKeyId,
        enc: m.enc,
        ciphertext: m.ciphertext,
        size: m.size,
        is_read: m.read,
        sent_at: m.sentAt,
      });
    },

    async list(recipientId, beforeId, limit, unreadOnly) {
      let q = db.replica("messages").select(META).where("recipient_id", recipientId);
      if (unreadOnly) q = q.andWhere("is_read", false);
      if (beforeId !== "") q = q.andWhere("id", "<", beforeId);
      const rows = (await q.orderBy("id", "desc").limit(limit)) as Row[];
      return rows.map((r) => toRow({ ...r, enc: new Uint8Array(), ciphertext: new Uint8Array() }));
    },

    async get(recipientId, id) {
      const row = (await db.primary("messages").where({ id, recipient_id: recipientId }).first()) as Row | undefined;
      return row && toRow(row);
    },

    async markRead(recipientId, id) {
      await db.primary("messages").where({ id, recipient_id: recipientId }).update({ is_read: true });
    },

    async delete(recipientId, id) {
      return (await db.primary("messages").where({ id, recipient_id: recipientId }).delete()) === 1;
    },
  };
}
