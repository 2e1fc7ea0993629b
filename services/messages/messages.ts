import { sealBase } from "../shared/crypto/hpke.js";
import { InvalidInputError, NotFoundError } from "../shared/errors.js";
import { isUuid, uuidv7 } from "../shared/ids.js";
import type { CallerUser } from "../shared/caller.js";
import type { MessageFeed } from "./feed.js";
import type { MessageRow, MessageStore } from "./store.js";

/**
 * Messages encrypted to the recipient's messaging key with HPKE (RFC 9180, base mode,
 * DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM). This service seals with the
 * recipient's public key and stores only the box; it never holds a private key: reading asks
 * the keys service to open the box for the recipient.
 */

/** The largest body accepted, in bytes. */
export const MAX_BODY_BYTES = 64 * 1024;

/** The HPKE info string: which application and format the box belongs to. */
export const MESSAGE_INFO = Buffer.from("keymesh.messages.v1");

const USERNAME = /^[a-z0-9._-]{3,64}$/;

/**
 * The associated data: the message id, the sender and the recipient (ids and usernames) and
 * the recipient's key id, each length-prefixed so no two different tuples encode the same.
 * A box moved to another message, sender or recipient fails to open.
 */
export function messageAad(m: Pick<MessageRow, "id" | "senderId" | "senderUsername" | "recipientId" | "recipientUsername" | "recipientKeyId">): Buffer {
  const parts = [m.id, m.senderId, m.senderUsername, m.recipientId, m.recipientUsername, m.recipientKeyId].map((s) => Buffer.from(s, "utf8"));
  const out: Buffer[] = [Buffer.from("keymesh.messages.v1/aad")];
  for (const p of parts) {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(p.length);
    out.push(len, p);
  }
  return Buffer.concat(out);
}

/** What the messages service asks of the keys service. */
export interface KeysPort {
  /** The recipient's current messaging key; NotFound when they have none. */
  messagingKeyOf(username: string): Promise<{ keyId: string; ownerId: string; publicKey: Uint8Array }>;
  /** Opens a box with the owner's private key (inside the keys service); DataLoss when it does not open. */
  openSealedBox(box: { ownerId: string; keyId: string; enc: Uint8Array; ciphertext: Uint8Array; info: Uint8Array; aad: Uint8Array }): Promise<Uint8Array>;
}

export interface Messages {
  send(sender: CallerUser, recipient: string, body: Uint8Array): Promise<MessageRow>;
  list(recipient: CallerUser, pageToken: string, pageSize: number, unreadOnly: boolean): Promise<{ rows: MessageRow[]; next: string }>;
  read(recipient: CallerUser, id: string): Promise<{ row: MessageRow; body: Uint8Array }>;
  delete(recipient: CallerUser, id: string): Promise<void>;
}

export interface MessagesDeps {
  readonly store: MessageStore;
  readonly keys: KeysPort;
  readonly feed: MessageFeed;
  readonly now?: () => number;
  /** Told when a notification could not be published (the message itself is stored). */
  readonly onFeedError?: (err: unknown) => void;
}

const messageIdOf = (id: string): string => {
  if (!isUuid(id)) throw new InvalidInputError("message_id must be a message id (a lowercase UUID)");
  return id;
};

// Another user's message and a message that does not exist are the same answer.
const notFound = (id: string) => new NotFoundError(`no message ${id} in your inbox`);

export function createMessages(deps: MessagesDeps): Messages {
  const { store, keys, feed } = deps;
  const now = deps.now ?? Date.now;

  return {
    async send(sender, recipient, body) {
      if (!USERNAME.test(recipient)) throw new InvalidInputError("recipient must be a username: 3-64 characters of a-z, 0-9, '.', '_', '-'");
      if (body.length === 0) throw new InvalidInputError("the message body is empty");
      if (body.length > MAX_BODY_BYTES) throw new InvalidInputError(`the message body is ${body.length} bytes; at most ${MAX_BODY_BYTES} are allowed`);
      const key = await keys.messagingKeyOf(recipient);
      const t = now();
      const meta = {
        id: uuidv7(t),
        senderId: sender.userId,
        senderUsername: sender.username,
        recipientId: key.ownerId,
        recipientUsername: recipient,
        recipientKeyId: key.keyId,
      };
      const box = sealBase("aes-256-gcm", key.publicKey, MESSAGE_INFO, messageAad(meta), body);
      const row: MessageRow = { ...meta, enc: box.enc, ciphertext: box.ciphertext, size: body.length, read: false, sentAt: t };
      await store.insert(row);
      // The message is stored; a lost notification only delays a watcher until its next list.
      await feed.publish(row).catch((err: unknown) => deps.onFeedError?.(err));
      return row;
    },

    async list(recipient, pageToken, pageSize, unreadOnly) {
      if (pageToken !== "") messageIdOf(pageToken);
      const rows = await store.list(recipient.userId, pageToken, pageSize, unreadOnly);
      return { rows, next: rows.length === pageSize ? rows[rows.length - 1]!.id : "" };
    },

    async read(recipient, id) {
      const row = await store.get(recipient.userId, messageIdOf(id));
      if (row === undefined) throw notFound(id);
      const body = await keys.openSealedBox({
        ownerId: row.recipientId,
        keyId: row.recipientKeyId,
        enc: row.enc,
        ciphertext: row.ciphertext,
        info: MESSAGE_INFO,
        aad: messageAad(row),
      });
      if (!row.read) await store.markRead(recipient.userId, row.id);
      return { row: { ...row, read: true }, body };
    },

    async delete(recipient, id) {
      if (!(await store.delete(recipient.userId, messageIdOf(id)))) throw notFound(id);
    },
  };
}
