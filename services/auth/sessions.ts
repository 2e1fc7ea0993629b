import type { Redis } from "ioredis";
import type { Database } from "../shared/storage/database.js";

/**
 * Where sessions live: Redis with a TTL when `KEYMESH_REDIS_URL` is set (every auth process
 * sees every session, and expiry is Redis's job), the `auth_sessions` table otherwise. Both
 * are keyed by the SHA-256 of the token: whoever reads the store cannot use what is in it.
 */

/** A live session. */
export interface Session {
  readonly userId: string;
  readonly expiresAt: number;
}

/** Persistence of sessions by token hash. */
export interface SessionStore {
  put(tokenHash: string, session: Session, now: number): Promise<void>;
  /** The session, unless it is unknown, revoked or expired at `now`. */
  get(tokenHash: string, now: number): Promise<Session | undefined>;
  /** Revokes a session; false when there was none. */
  revoke(tokenHash: string): Promise<boolean>;
}

/** Sessions in Redis: one key per session, expiring with it. */
export function createRedisSessionStore(redis: Redis, prefix: string): SessionStore {
  const key = (hash: string) => `${prefix}auth:session:${hash}`;
  return {
    async put(hash, session, now) {
      await redis.set(key(hash), JSON.stringify({ u: session.userId, e: session.expiresAt }), "PX", Math.max(1, session.expiresAt - now));
    },
    async get(hash, now) {
      const raw = await redis.get(key(hash));
      if (raw === null) return undefined;
      const { u, e } = JSON.parse(raw) as { u: string; e: number };
      return e > now ? { userId: u, expiresAt: e } : undefined;
    },
    async revoke(hash) {
      return (await redis.del(key(hash))) > 0;
    },
  };
}

interface Row {
  token_hash: string;
  user_id: string;
  created_at: number | string;
  expires_at: number | string;
}

/** Sessions in the database; expired rows are removed as they are met. */
export function createDatabaseSessionStore(db: Database): SessionStore {
  const sessions = () => db.primary<Row>("auth_sessions");
  return {
    async put(hash, session, now) {
      await sessions().insert({ token_hash: hash, user_id: session.userId, created_at: now, expires_at: session.expiresAt });
    },
    async get(hash, now) {
      const row = await sessions().where({ token_hash: hash }).first();
      if (row === undefined) return undefined;
      if (Number(row.expires_at) <= now) {
        await sessions().where({ token_hash: hash }).delete();
        return undefined;
      }
      return { userId: row.user_id, expiresAt: Number(row.expires_at) };
    },
    async revoke(hash) {
      return (await sessions().where({ token_hash: hash }).delete()) > 0;
    },
  };
}
