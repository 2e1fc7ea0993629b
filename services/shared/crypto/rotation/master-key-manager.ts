import type { Knex } from "knex";
import { Code } from "@connectrpc/connect";
import { DomainError, PreconditionError } from "../../errors.js";
import type { Database } from "../../storage/database.js";
import type { MasterKeyring } from "../envelope.js";
import { addDevMasterKey, loadMasterKeyring } from "../master-keys.js";

/**
 * The mesh-wide state of the master keys. Key material comes from configuration
 * (`KEYMESH_MASTER_KEYS`, or the data directory in development) and never enters the
 * database; which version is primary, active or retired is stored in `master_key_versions`, so every
 * process of the mesh agrees on it. Adding a key to the configuration therefore changes
 * nothing by itself: it only becomes primary when `rotate` says so.
 */

/** A master-key version's state. */
export type MasterKeyState = "primary" | "active" | "retired";

/** Options for `createMasterKeyManager`. */
export interface MasterKeyManagerOptions {
  readonly db: Database;
  /** KEYMESH_MASTER_KEYS; unset: development keys in `dataDir`. */
  readonly spec: string | undefined;
  readonly dataDir: string;
  readonly now?: () => number;
  /**
   * How long after a rotation retiring the previous primary is refused: long enough for every
   * process to have re-read the primary (default 5 s, above twice the refresh interval), so no
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
  /** Retires `version` after `rowsUsing()` reported zero rows; FailedPrecondition otherwise. */
  retire(version: number, rowsUsing: () => Promise<number>): Promise<void>;
  /** Refreshes every `intervalMs` until `signal` aborts, so rotations reach this process. */
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
  const load = () => loadMasterKeyring({ ...(opts.spec === undefined ? {} : { spec: opts.spec }), dataDir: opts.dataDir });
  let keys = load();
  const t = now();
  await db.primary(TABLE)
    .insert({ version: keys.primaryVersion, state: "primary", created_at: t, updated_at: t })
    .onConflict("version")
    .ignore();
  // Only one primary may exist; if two fresh processes inserted different ones, the lower wins.
  let current = keys;

  async function readStates(knex: Knex = db.primary): Promise<Map<number, MasterKeyState>> {
    const rows = (await knex(TABLE).select("version", "state")) as { version: number; state: MasterKeyState }[];
    return new Map(rows.map((r) => [Number(r.version), r.state]));
  }

  async function refresh(): Promise<void> {
    const states = await readStates();
    const primaries = [...states].filter(([, s]) => s === "primary").map(([v]) => v);
    const primary = primaries.length > 0 ? Math.min(...primaries) : keys.primaryVersion;
    if (keys.key(primary) === undefined && opts.spec === undefined) keys = load();
    current = ringWith(keys, primary);
  }
  await refresh();

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
        if (opts.spec !== undefined) {
          throw new PreconditionError(
            `no master key newer than version ${previous} is configured: add it to KEYMESH_MASTER_KEYS on every process first (docs/operations.md)`,
          );
        }
        next = addDevMasterKey(opts.dataDir);
        keys = load();
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

    async retire(version, rowsUsing) {
      await refresh();
      if (version === current.primaryVersion) throw new PreconditionError(`master key version ${version} is primary; rotate first`);
      const states = await readStates();
      if (!states.has(version) && keys.key(version) === undefined) throw new PreconditionError(`master key version ${version} is unknown`);
      const since = now() - Number(((await db.primary(TABLE).where({ version: current.primaryVersion }).first("updated_at")) as { updated_at?: number } | undefined)?.updated_at ?? 0);
      const settleMs = opts.settleMs ?? 5_000;
      if (since < settleMs) {
        throw new PreconditionError(
          `version ${current.primaryVersion} became primary ${Math.round(since / 1000)} s ago; retry in ${Math.ceil((settleMs - since) / 1000)} s, once every process has picked it up`,
        );
      }
      const rows = await rowsUsing();
      if (rows > 0) throw new PreconditionError(`master key version ${version} still encrypts ${rows} rows; run the rewrap first`);
      const t2 = now();
      await db.primary(TABLE).insert({ version, state: "retired", created_at: t2, updated_at: t2 }).onConflict("version").merge(["state", "updated_at"]);
    },

    follow(intervalMs, signal) {
      const timer = setInterval(() => void refresh().catch(() => undefined), intervalMs);
      timer.unref();
      signal.addEventListener("abort", () => clearInterval(timer), { once: true });
    },
  };
}
