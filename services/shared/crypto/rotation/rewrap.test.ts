import { describe, expect, it } from "vitest";
import { createMasterKeyring, open, seal, sealedVersion, type MasterKeyring } from "../envelope.js";
import { rewrapSets, rowsOffPrimary } from "./rewrap.js";
import type { SealedRow, SealedRowSet } from "./sealed-row-set.js";

const keys = new Map([1, 2].map((v) => [v, Buffer.alloc(32, v)]));
const ring = (primary: number): MasterKeyring => createMasterKeyring(keys, primary);

/** An in-memory sealed row set; `interfere` runs before each batch's compare-and-set. */
function memorySet(n: number, interfere: (rows: Map<string, Buffer>) => void = () => undefined): SealedRowSet & { rows: Map<string, Buffer> } {
  const ctx = (key: string) => ({ table: "t", column: "c", id: key });
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

describe("rewrap", () => {
  it("moves every row to the primary in batches, and a bounded pass stops at its limit", async () => {
    const set = memorySet(25);
    const first = await rewrapSets([set], { ring: () => ring(2), limit: 10, batchSize: 4 });
    expect([first.rewrapped, first.remaining]).toEqual([10, 15]);
    const rest = await rewrapSets([set], { ring: () => ring(2), batchSize: 4 });
    expect([rest.rewrapped, rest.remaining]).toEqual([15, 0]);
    for (const [key, sealed] of set.rows) expect(open(ring(2), sealed, { table: "t", column: "c", id: key }).toString()).toMatch(/^value \d+$/);
  });

  it("lets a concurrent writer win the compare-and-set, and leaves rows it cannot open alone", async () => {
    let wrote = false;
    const set = memorySet(6, (rows) => {
      if (wrote) return;
      wrote = true;
      // A writer replaces row 0 under the old key between the scan and the write.
      rows.set("row-0000", seal(ring(1), Buffer.from("newer"), { table: "t", column: "c", id: "row-0000" }));
    });
    set.rows.set("row-0005", Buffer.concat([set.rows.get("row-0005")!.subarray(0, 20), Buffer.alloc(20)])); // tampered
    const r = await rewrapSets([set], { ring: () => ring(2) });
    expect({ rewrapped: r.rewrapped, raced: r.raced, failed: r.failed }).toEqual({ rewrapped: 4, raced: 1, failed: 1 });
    expect(open(ring(2), set.rows.get("row-0000")!, { table: "t", column: "c", id: "row-0000" }).toString()).toBe("newer");
    // The next pass picks up the row the writer touched; the tampered one stays off the primary.
    const again = await rewrapSets([set], { ring: () => ring(2) });
    expect(again.rewrapped).toBe(1);
    expect(await rowsOffPrimary([set], 2)).toBe(1);
  });
});
