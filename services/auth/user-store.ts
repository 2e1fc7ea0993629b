import type { Database } from "../shared/storage/database.js";
import { isDuplicateKey } from "../shared/storage/errors.js";

/** A registered user as stored. */
export interface UserRow {
  readonly id: string;
  readonly username: string;
  readonly passwordHash: string;
  readonly admin: boolean;
  readonly createdAt: number;
}

/** Persistence of users (the auth service's `auth_users` table). */
export interface UserStore {
  /** Inserts a user; false when the username is taken. */
  insert(user: UserRow): Promise<boolean>;
  byUsername(username: string): Promise<UserRow | undefined>;
  byId(id: string): Promise<UserRow | undefined>;
  /** Sets or clears the admin role; false when there is no such user. */
  setAdmin(username: string, admin: boolean): Promise<boolean>;
}

interface Row {
  id: string;
  username: string;
  password_hash: string;
  admin: number | boolean;
  created_at: number | string;
}

const toUser = (r: Row): UserRow => ({
  id: r.id,
  username: r.username,
  passwordHash: r.password_hash,
  admin: Boolean(r.admin),
  createdAt: Number(r.created_at),
});

/** The knex implementation of `UserStore`. */
export function createUserStore(db: Database): UserStore {
  const users = () => db.primary<Row>("auth_users");
  return {
    async insert(user) {
      try {
        await users().insert({
          id: user.id,
          username: user.username,
          password_hash: user.passwordHash,
          admin: user.admin,
          created_at: user.createdAt,
        });
        return true;
      } catch (err) {
        if (isDuplicateKey(err)) return false;
        throw err;
      }
    },
    async byUsername(username) {
      const row = await users().where({ username }).first();
      return row === undefined ? undefined : toUser(row);
    },
    async byId(id) {
      const row = await users().where({ id }).first();
      return row === undefined ? undefined : toUser(row);
    },
    async setAdmin(username, admin) {
      return (await users().where({ username }).update({ admin })) > 0;
    },
  };
}
