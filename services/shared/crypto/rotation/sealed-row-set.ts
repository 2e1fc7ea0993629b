import type { SealContext } from "../envelope.js";

/**
 * A set of rows holding sealed values (vault secret versions, keyring private keys, users'
 * keys, ...) as the master-key rotation sees them. A service registers its sets once; the one
 * rewrap mechanism then counts and moves them all, whatever their table looks like.
 */

/** One sealed value and where it lives. */
export interface SealedRow {
  /** The row's key within its set, in the order `scan` walks (e.g. "<id>/<version>"). */
  readonly key: string;
  readonly sealed: Buffer;
  /** The envelope's associated data: opening and resealing use the same context. */
  readonly context: SealContext;
}

/** One row's new sealed value. */
export interface Replacement {
  readonly row: SealedRow;
  readonly next: Buffer;
  readonly nextVersion: number;
}

/** A table (or part of one) of sealed values. */
export interface SealedRowSet {
  /** Unique name, "<service>.<table>", e.g. "vault.secret_versions". */
  readonly name: string;
  /**
   * Rows per master-key version, from the read replica (status), or with `fresh` from the
   * primary: what a decision (retire, is the rewrap done) must count, never a lagging copy.
   */
  countByVersion(fresh?: boolean): Promise<Map<number, number>>;
  /** Up to `limit` rows sealed under any version other than `primary`, with keys after `after`, in key order. */
  scan(primary: number, after: string, limit: number): Promise<SealedRow[]>;
  /**
   * Compare-and-set, for a batch in one transaction (one commit, not one per row): stores
   * each `next` (sealed under `nextVersion`) only if its row still holds exactly `row.sealed`.
   * Returns, per item, false when a writer changed or removed the row in the meantime.
   */
  replace(items: readonly Replacement[]): Promise<boolean[]>;
}

/** The sealed row sets a process knows, by name. */
export interface SealedRowSets {
  register(set: SealedRowSet): void;
  list(): SealedRowSet[];
}

/** Creates an empty registry. */
export function createSealedRowSets(): SealedRowSets {
  const sets = new Map<string, SealedRowSet>();
  return {
    register(set) {
      if (sets.has(set.name)) throw new Error(`sealed row set ${set.name} is registered twice`);
      sets.set(set.name, set);
    },
    list: () => [...sets.values()],
  };
}
