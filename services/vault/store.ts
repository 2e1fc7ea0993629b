import type { Knex } from "knex";
import type { Database } from "../shared/storage/database.js";
import { isDuplicateKey } from "../shared/storage/errors.js";

/** A secret's metadata row. */
export interface SecretRow {
  readonly id: string;
  readonly owner: string;
  readonly name: string | null;
  readonly labels: Readonly<Record<string, string>>;
  readonly currentVersion: number;
  readonly createdAt: number;
  readonly updatedAt: number;
}

/** The state of one version. */
export type VersionState = "active" | "deleted" | "destroyed";

/** One version row; `ciphertext` is the sealed envelope, null once destroyed. */
export interface VersionRow {
  readonly secretId: string;
  readonly version: number;
  readonly state: VersionState;
  readonly ciphertext: Buffer | null;
  readonly masterKeyVersion: number;
  readonly size: number;
  readonly createdAt: number;
  readonly deletedAt: number | null;
}

/** How a read names its secret. */
export type Selector = { readonly id: string } | { readonly owner: string; readonly name: string };

/** A secret's name is already used by the same owner. */
export class NameTakenError extends Error {
  override readonly name = "NameTakenError";
}

/** The vault's storage. Every method is one statement or one short transaction. */
export interface VaultStore {
  /** Inserts a secret and its version 1; NameTakenError when the owner already uses the name. */
  create(secret: SecretRow, first: VersionRow): Promise<void>;
  find(selector: Selector): Promise<SecretRow | undefined>;
  /** Secrets named `name` that were granted to `principal`. */
  findGranted(principal: string, name: string): Promise<SecretRow[]>;
  /** The secret with one version: `version` 0 means the newest active one. */
  read(selector: Selector, version: number): Promise<{ secret: SecretRow; version: VersionRow } | undefined>;
  version(secretId: string, version: number): Promise<VersionRow | undefined>;
  /**
   * A secret's versions, without values, from the read replica (metadata is read-only and
   * may trail the primary by the replica's lag); `fresh` reads the primary.
   */
  versions(secretId: string, fresh?: boolean): Promise<VersionRow[]>;
  /**
   * Appends `row` as version `expected + 1` if the secret's current version is still
   * `expected` (compare-and-set); false when another writer got there first.
   */
  addVersion(row: VersionRow, expected: number): Promise<boolean>;
  /** Moves a version from one of `from` to `to`; returns the row after, undefined if it was in no `from` state. */
  setState(secretId: string, version: number, from: readonly VersionState[], to: VersionState, now: number): Promise<VersionRow | undefined>;
  /**
   * The owner's secrets whose names start with `prefix`, after the keyset cursor, in name
   * order, from the read replica (a listing may trail the primary by the replica's lag).
   */
  list(owner: string, prefix: string, after: { name: string; id: string } | undefined, limit: number): Promise<SecretRow[]>;
  hasGrant(secretId: string, principal: string): Promise<boolean>;
  grant(secretId: string, principal: string, grantedBy: string, now: number): Promise<void>;
  revoke(secretId: string, principal: string): Promise<boolean>;
}

const SECRET_COLUMNS = ["s.id", "s.owner", "s.name", "s.labels", "s.current_version", "s.created_at", "s.updated_at"];
const VERSION_COLUMNS = [
  "v.secret_id",
  "v.version",
  "v.state",
  "v.ciphertext",
  "v.master_key_version",
  "v.size",
  "v.created_at as v_created_at",
  "v.deleted_at",
];

type Raw = Record<string, unknown>;

const toSecret = (r: Raw): SecretRow => ({
  id: String(r.id),
  owner: String(r.owner),
  name: r.name === null || r.name === undefined ? null : String(r.name),
  labels: JSON.parse(String(r.labels)) as Record<string, string>,
  currentVersion: Number(r.current_version),
  createdAt: Number(r.created_at),
  updatedAt: Number(r.updated_at),
});

const toVersion = (r: Raw, createdAt = "created_at"): VersionRow => ({
  secretId: String(r.secret_id),
  version: Number(r.version),
  state: r.state as VersionState,
  ciphertext: r.ciphertext === null || r.ciphertext === undefined ? null : Buffer.from(r.ciphertext as Uint8Array),
  masterKeyVersion: Number(r.master_key_version),
  size: Number(r.size),
  createdAt: Number(r[createdAt]),
  deletedAt: r.deleted_at === null || r.deleted_at === undefined ? null : Number(r.deleted_at),
});

const versionRecord = (v: VersionRow) => ({
  secret_id: v.secretId,
  version: v.version,
  state: v.state,
  ciphertext: v.ciphertext,
  master_key_version: v.masterKeyVersion,
  size: v.size,
  created_at: v.createdAt,
  deleted_at: v.deletedAt,
});

function where(q: Knex.QueryBuilder, selector: Selector, alias = "s"): Knex.QueryBuilder {
  return "id" in selector ? q.where(`${alias}.id`, selector.id) : q.where(`${alias}.owner`, selector.owner).where(`${alias}.name`, selector.name);
}

/** The vault store over `secrets`, `secret_versions` and `secret_grants`. */
export function createVaultStore(db: Database): VaultStore {
  const k = db.primary;
  return {
    create: async (secret, first) => {
      try {
        await k.transaction(async (trx) => {
          await trx("secrets").insert({
            id: secret.id,
            owner: secret.owner,
            name: secret.name,
            labels: JSON.stringify(secret.labels),
            current_version: secret.currentVersion,
            created_at: secret.createdAt,
            updated_at: secret.updatedAt,
          });
          await trx("secret_versions").insert(versionRecord(first));
        });
      } catch (err) {
        if (isDuplicateKey(err)) throw new NameTakenError("name taken");
        throw err;
      }
    },

    find: async (selector) => {
      const row = (await where(k("secrets as s").select(SECRET_COLUMNS), selector).first()) as Raw | undefined;
      return row === undefined ? undefined : toSecret(row);
    },

    findGranted: async (principal, name) => {
      const rows = (await k("secrets as s")
        .join("secret_grants as g", "g.secret_id", "s.id")
        .where("g.principal", principal)
        .where("s.name", name)
        .select(SECRET_COLUMNS)
        .limit(2)) as Raw[];
      return rows.map(toSecret);
    },

    read: async (selector, version) => {
      let q = where(k("secrets as s").join("secret_versions as v", "v.secret_id", "s.id").select([...SECRET_COLUMNS, ...VERSION_COLUMNS]), selector);
      q = version === 0 ? q.where("v.state", "active").orderBy("v.version", "desc") : q.where("v.version", version);
      const row = (await q.first()) as Raw | undefined;
      return row === undefined ? undefined : { secret: toSecret(row), version: toVersion(row, "v_created_at") };
    },

    version: async (secretId, version) => {
      const row = (await k("secret_versions").where({ secret_id: secretId, version }).first()) as Raw | undefined;
      return row === undefined ? undefined : toVersion(row);
    },

    versions: async (secretId, fresh = false) => {
      const rows = (await (fresh ? k : db.replica)("secret_versions")
        .select(["secret_id", "version", "state", "master_key_version", "size", "created_at", "deleted_at"])
        .where("secret_id", secretId)
        .orderBy("version")) as Raw[];
      return rows.map((r) => toVersion({ ...r, ciphertext: null }));
    },

    addVersion: (row, expected) =>
      k.transaction(async (trx) => {
        // The conditional UPDATE is the compare-and-set: of two writers expecting the same
        // version, exactly one matches the row; the other changes nothing and reports false.
        const moved = await trx("secrets")
          .where({ id: row.secretId, current_version: expected })
          .update({ current_version: expected + 1, updated_at: row.createdAt });
        if (moved !== 1) return false;
        await trx("secret_versions").insert(versionRecord(row));
        return true;
      }),

    setState: async (secretId, version, from, to, now) => {
      const changes: Record<string, unknown> = { state: to };
      if (to === "active") changes.deleted_at = null;
      else changes.deleted_at = now;
      if (to === "destroyed") Object.assign(changes, { ciphertext: null, master_key_version: 0 });
      const n = await k("secret_versions").where({ secret_id: secretId, version }).whereIn("state", from).update(changes);
      if (n !== 1) return undefined;
      const row = (await k("secret_versions").where({ secret_id: secretId, version }).first()) as Raw;
      return toVersion(row);
    },

    list: async (owner, prefix, after, limit) => {
      let q = db.replica("secrets as s").select(SECRET_COLUMNS).where("s.owner", owner);
      if (prefix !== "") q = q.where("s.name", ">=", prefix).where("s.name", "<", `${prefix}\u{10ffff}`);
      if (after !== undefined) q = q.whereRaw("(COALESCE(s.name, ''), s.id) > (?, ?)", [after.name, after.id]);
      const rows = (await q.orderByRaw("COALESCE(s.name, ''), s.id").limit(limit)) as Raw[];
      return rows.map(toSecret);
    },

    hasGrant: async (secretId, principal) =>
      (await k("secret_grants").where({ secret_id: secretId, principal }).first("secret_id")) !== undefined,

    grant: async (secretId, principal, grantedBy, now) => {
      await k("secret_grants").insert({ secret_id: secretId, principal, granted_by: grantedBy, created_at: now }).onConflict(["secret_id", "principal"]).ignore();
    },

    revoke: async (secretId, principal) => (await k("secret_grants").where({ secret_id: secretId, principal }).delete()) > 0,
  };
}
