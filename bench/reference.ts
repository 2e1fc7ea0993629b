import { generateKeyPairSync, sign, type KeyObject } from "node:crypto";
import { createPool, type RowDataPacket } from "mysql2/promise";

/**
 * The reference the mesh is measured against: the plain loop somebody would write instead of
 * the mesh. One process, no RPC, no leases, no claims, mysql2 directly: `inFlight` workers
 * each take the next id range of `batchSize` records, read it with one SELECT, sign every
 * payload with Ed25519 on the main thread (one key per batch, round robin over `keyCount`
 * keys) and store the batch's signatures with one multi-row INSERT.
 */
export async function referenceLoop(
  url: string,
  opts: { batchSize: number; keyCount: number; inFlight?: number },
): Promise<{ wallMs: number; signed: number }> {
  const inFlight = opts.inFlight ?? 4;
  const keys: { id: string; key: KeyObject }[] = Array.from({ length: opts.keyCount }, (_, i) => ({
    id: `ref-${i}`,
    key: generateKeyPairSync("ed25519").privateKey,
  }));
  const pool = createPool({ uri: url, connectionLimit: inFlight });
  try {
    const started = performance.now();
    const [[range]] = await pool.query<RowDataPacket[]>("SELECT MIN(id) AS lo, MAX(id) AS hi FROM records");
    const lo = Number(range?.lo ?? 1);
    const hi = Number(range?.hi ?? 0);
    let next = lo;
    let batch = 0;
    let signed = 0;
    const worker = async () => {
      while (next <= hi) {
        const from = next;
        const to = Math.min(hi, from + opts.batchSize - 1);
        next = to + 1;
        const n = batch++;
        const [rows] = await pool.query<RowDataPacket[]>("SELECT id, payload FROM records WHERE id BETWEEN ? AND ?", [from, to]);
        if (rows.length === 0) continue;
        const { id: keyId, key } = keys[n % keys.length]!;
        const now = Date.now();
        const values = rows.map((r) => [r.id, keyId, 1, `ref-${n}`, sign(null, r.payload as Buffer, key), now]);
        await pool.query("INSERT INTO signatures (record_id, key_id, fence, batch_id, signature, signed_at) VALUES ?", [values]);
        signed += rows.length;
      }
    };
    await Promise.all(Array.from({ length: inFlight }, worker));
    return { wallMs: performance.now() - started, signed };
  } finally {
    await pool.end();
  }
}
