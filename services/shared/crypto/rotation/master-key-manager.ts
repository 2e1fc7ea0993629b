import { statSync } from "node:fs";
import { resolve } from "node:path";
import type { Knex } from "knex";
import { Code } from "@connectrpc/connect";
import { DomainError, PreconditionError } from "../../errors.js";
import type { Database } from "../../storage/database.js";
import type { MasterKeyring } from "../envelope.js";
import { addDevMasterKey, DEV_MASTER_KEYS_FILE, loadMasterKeyring, type MasterKeyLogger } from "../master-keys.js";

/**
 * The mesh-wide state of the master keys. Key material comes from configuration
 * (`KEYMESH_MASTER_KEYS`, or the data directory in development) and never enters the
 * database; which version is primary, active or retired is stored in `master_key_versions`, so every
 * process of the mesh agrees on it. Adding a key to the configuration therefore changes
 * nothing by itself: it only becomes primary when `rotate` says so.
 *
 * Every service of a process that seals or opens with the master keys (vault, keys, the
 * rewrap workers) shares one manager per database (`masterKeysFor`); the signing service,
 * which has no database and only opens, uses the same key material (`masterKeyMaterial`).
 */

/** How often a following process re-reads which master-key version is primary. */
export const MASTER_KEY_REFRESH_MS = 2_000;
/**
 * How long after a rotation every process has re-read the primary (above twice the refresh
 * interval): until then some may still seal under the previous one.
 */
export const ROTATION_SETTLE_MS = 5_000;

/** Options for the key material (`masterKeyMaterial`). */
export interface MasterKeyMaterialOptions {
  /** KEYMESH_MASTER_KEYS; unset: development keys in `dataDir`. */
  readonly spec: string | undefined;
  readonly dataDir: string;
  /** Says once per process that development keys are in use. */
  readonly logger?: MasterKeyLogger;
}

/** The master keys a process holds, whatever the mesh's primary. */
export interface MasterKeyMaterial {
  /** The loaded keys; primary: the highest loaded version (a process without a database never seals). */
  ring(): MasterKeyring;
  /** Re-reads the development key file if it changed; no-op with KEYMESH_MASTER_KEYS. */
  reload(): void;
}

/**
 * The configured master keys. With KEYMESH_MASTER_KEYS they are fixed until a restart. In
 * development the key file grows when any process rotates; asking the ring for a version it
 * does not hold re-reads the file first (only when it changed, so a forged version number
 * costs a `stat`, not a read), so a key sealed or a lease token minted under a version
 * generated a moment ago by another process still opens here, on the first try.
 */
export function masterKeyMaterial(opts: MasterKeyMaterialOptions): MasterKeyMaterial {
  const dev = opts.spec === undefined || opts.spec === "";
  const file = resolve(opts.dataDir, DEV_MASTER_KEYS_FILE);
  const load = () => loadMasterKeyring({ ...(dev ? {} : { spec: opts.spec! }), dataDir: opts.dataDir, ...(opts.logger === undefined ? {} : { logger: opts.logger }) });
  const stamp = () => {
    const st = statSync(file, { throwIfNoEntry: false });
    return st === undefined ? "" : `${st.mtimeMs}/${st.size}`;
  };
  let seen = dev ? stamp() : "";
  let keys = load();
  if (dev) seen = stamp();
  const reload = () => {
    if (!dev) return;
    const now = stamp();
    if (now === seen) return;
    seen = now;
    keys = load();
  };
  const ring: MasterKeyring = {
    get primaryVersion() {
      return keys.primaryVersion;
    },
    key(version) {
      const hit = keys.key(version);
      if (hit !== undefined) return hit;
      reload();
      return keys.key(version);
    },
    versions: () => keys.versions(),
  };
  return { ring: () => ring, reload };
}

/** A master-key version's state. */
export type MasterKeyState = "primary" | "active" | "retired";

/** Options for `createMasterKeyManager`. */
export interface MasterKeyManagerOptions extends MasterKeyMaterialOptions {
  readonly db: Database;
  readonly now?: () => number;
  /**
   * How long after a rotation retiring the previous primary is refused: long enough for every
   * process to have re-read the primary (default ROTATION_SETTLE_MS), so no
   * process still seals under a version that is being retired.
   */
  readonly settleMs?: number;
}

/** The master keys of a process, with the mesh's primary. */
export interface MasterKeyManager {
  /** The keyring to seal and open with: configured keys, the mesh's primary version. */
  ring(): MasterKeyring;
  /** Re-reads the states (and, in development, the key file). */
  refresh(): Promise<void>;
  /** Every known version's state (configured or recorded). */
  states(): Promise<Map<number, MasterKeyState>>;
  /** Makes the next version primary; returns the previous and new primary versions. */
  rotate(): Promise<{ previous: number; primary: number }>;
  /**
   * Retires `version` after `rowsUsing()` reported zero rows; FailedPrecondition otherwise,
   * naming the count as `what` ("rows", "private keys") and `how` to move them.
   */
  retire(version: number, rowsUsing: () => Promise<number>, say?: { what: string; how: string }): Promise<void>;
  /**
   * Refreshes every `intervalMs` while `signal` is not aborted, so rotations reach this
   * process. Several services of a process may follow one manager: it refreshes once per
   * interval while any of them still runs.
   */
  follow(intervalMs: number, signal: AbortSignal): void;
}

const TABLE = "master_key_versions";

function ringWith(keys: MasterKeyring, primaryVersion: number): MasterKeyring {
  // A primary this process does not hold makes `seal` fail with UnknownMasterKeyError
  // (FailedPrecondition): the operator skipped "add the key to every process" (operations.md).
  return { primaryVersion, key: (v) => keys.key(v), versions: () => keys.versions() };
}

/** Opens the manager: records the configured highest version as primary on a fresh database. */
export async function createMasterKeyManager(opts: MasterKeyManagerOptions): Promise<MasterKeyManager> {
  const { db } = opts;
  const now = opts.now ?? Date.now;
  const material = masterKeyMaterial(opts);
  const keys = material.ring();

  async function readStates(knex: Knex = db.primary): Promise<Map<number, MasterKeyState>> {
    const rows = (await knex(TABLE).select("version", "state")) as { version: number; state: MasterKeyState }[];
    return new Map(rows.map((r) => [Number(r.version), r.state]));
  }

  // Only a fresh database gets a primary from the configuration: on a running mesh a process
  // configured with a newer key must not make it primary by starting (that is `rotate`'s job).
  // If two fresh processes insert different ones at once, the lower wins (see `refresh`).
  if (![...(await readStates()).values()].includes("primary")) {
    const t = now();
    await db.primary(TABLE).insert({ version: keys.primaryVersion, state: "primary", created_at: t, updated_at: t }).onConflict("version").ignore();
  }
  let current = keys;

  async function refresh(): Promise<void> {
    const states = await readStates();
    const primaries = [...states].filter(([, s]) => s === "primary").map(([v]) => v);
    const primary = primaries.length > 0 ? Math.min(...primaries) : keys.primaryVersion;
    if (keys.key(primary) === undefined) material.reload();
    current = ringWith(keys, primary);
  }
  await refresh();

  const followers = new Set<AbortSignal>();
  let timer: NodeJS.Timeout | undefined;

  return {
    ring: () => current,
    refresh,

    async states() {
      const recorded = await readStates();
      for (const v of keys.versions()) if (!recorded.has(v)) recorded.set(v, "active");
      return recorded;
    },

    async rotate() {
      await refresh();
      const previous = current.primaryVersion;
      const states = await readStates();
      let next = keys.versions().find((v) => v > previous && states.get(v) !== "retired");
      if (next === undefined) {
        if (opts.spec !== undefined && opts.spec !== "") {
          throw new PreconditionError(
            `no master key newer than version ${previous} is configured: add it to KEYMESH_MASTER_KEYS on every process first (docs/operations.md)`,
          );
        }
        next = addDevMasterKey(opts.dataDir);
        material.reload();
      }
      const target = next;
      await db.primary.transaction(async (trx) => {
        const t2 = now();
        const demoted = await trx(TABLE).where({ version: previous, state: "primary" }).update({ state: "active", updated_at: t2 });
        if (demoted !== 1) throw new DomainError(Code.Aborted, "another rotation changed the primary master key first; check the status and retry");
        await trx(TABLE).insert({ version: target, state: "primary", created_at: t2, updated_at: t2 }).onConflict("version").merge(["state", "updated_at"]);
      });
      await refresh();
      return { previous, primary: target };
    },

    async retire(version, rowsUsing, say = { what: "rows", how: "run the rewrap first" }) {
      await refresh();
      if (version === current.primaryVersion) throw new PreconditionError(`master key version ${version} is primary; rotate first`);
      const states = await readStates();
      if (!states.has(version) && keys.key(version) === undefined) throw new PreconditionError(`master key version ${version} is unknown`);
      const since = now() - Number(((await db.primary(TABLE).where({ version: current.primaryVersion }).first("updated_at")) as { updated_at?: number } | undefined)?.updated_at ?? 0);
      const settleMs = opts.settleMs ?? ROTATION_SETTLE_MS;
      if (since < settleMs) {
        throw new PreconditionError(
          `version ${current.primaryVersion} became primary ${Math.round(since / 1000)} s ago; retry in ${Math.ceil((settleMs - since) / 1000)} s, once every process has picked it up`,
        );
      }
      const rows = await rowsUsing();
      if (rows > 0) throw new PreconditionError(`master key version ${version} still encrypts ${rows} ${say.what}; ${say.how}`);
      const t2 = now();
      await db.primary(TABLE).insert({ version, state: "retired", created_at: t2, updated_at: t2 }).onConflict("version").merge(["state", "updated_at"]);
    },

    follow(intervalMs, signal) {
      if (signal.aborted) return;
      followers.add(signal);
      signal.addEventListener(
        "abort",
        () => {
          followers.delete(signal);
          if (followers.size === 0 && timer !== undefined) {
            clearInterval(timer);
            timer = undefined;
          }
        },
        { once: true },
      );
      if (timer === undefined) {
        timer = setInterval(() => void refresh().catch(() => undefined), intervalMs);
        timer.unref();
      }
    },
  };
}

/** One manager per database and key configuration, shared by the services of a process. */
const shared = new WeakMap<Database, Map<string, Promise<MasterKeyManager>>>();

/**
 * The process's master-key manager for `db`, created on first use and following the mesh's
 * primary (every MASTER_KEY_REFRESH_MS) while `shutdown` is not aborted. Vault, keys and the
 * rewrap workers of one process thus seal under the same primary and see a rotation at the
 * same moment, whichever service made it.
 */
export async function masterKeysFor(opts: MasterKeyMaterialOptions & { readonly db: Database; readonly shutdown: AbortSignal }): Promise<MasterKeyManager> {
  let byConfig = shared.get(opts.db);
  if (byConfig === undefined) shared.set(opts.db, (byConfig = new Map()));
  const id = `${opts.spec ?? ""}\n${resolve(opts.dataDir)}`;
  let manager = byConfig.get(id);
  if (manager === undefined) {
    const created = createMasterKeyManager(opts);
    byConfig.set(id, created);
    created.catch(() => byConfig.delete(id));
    manager = created;
  }
  const m = await manager;
  m.follow(MASTER_KEY_REFRESH_MS, opts.shutdown);
  return m;
}
