import { createMasterKeyring, seal, sealedVersion, type MasterKeyring } from "../../services/shared/crypto/envelope.js";
import type { SealedRow, SealedRowSet } from "../../services/shared/crypto/rotation/sealed-row-set.js";

/** Sealed row sets in memory, for the master-key rotation's unit tests: versions 1 and 2. */
const keys = new Map([1, 2].map((v) => [v, Buffer.alloc(32, v)]));
export const ring = (primary: number): MasterKeyring => createMasterKeyring(keys, primary);

/** The seal context of the memory set's row `key`. */
export const rowContext = (key: string) => ({ table: "t", column: "c", id: key });

/** An in-memory sealed row set; `interfere` runs before each batch's compare-and-set. */
export function memorySet(n: number, interfere: (rows: Map<string, Buffer>) => void = () => undefined): SealedRowSet & { rows: Map<string, Buffer> } {
  const ctx = rowContext;
  const rows = new Map<string, Buffer>();
  for (let i = 0; i < n; i++) {
    const key = `row-${String(i).padStart(4, "0")}`;
    rows.set(key, seal(ring(1), Buffer.from(`value ${i}`), ctx(key)));
  }
  return {
    name: "test.rows",
    rows,
    async countByVersion() {
      const counts = new Map<number, number>();
      for (const v of rows.values()) counts.set(sealedVersion(v), (counts.get(sealedVersion(v)) ?? 0) + 1);
      return counts;
    },
    async scan(primary, after, limit) {
      return [...rows.entries()]
        .filter(([k, v]) => k > after && sealedVersion(v) !== primary)
        .sort(([a], [b]) => a.localeCompare(b))
        .slice(0, limit)
        .map(([key, sealed]): SealedRow => ({ key, sealed, context: ctx(key) }));
    },
    async replace(items) {
      interfere(rows);
      return items.map(({ row, next }) => {
        if (!rows.get(row.key)?.equals(row.sealed)) return false;
        rows.set(row.key, next);
        return true;
      });
    },
  };
}

