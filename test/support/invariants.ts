import type { Knex } from "knex";
import { ed25519PublicKey, verifyEd25519 } from "../../services/shared/crypto/ed25519.js";

/**
 * How far apart in time a release and a grant, or two grants, can be dated and still have
 * happened in the other order in the database (see 4.): each is dated around its statement, which
 * takes a round trip, longer when the test runs beside others on two cores.
 */
const RELEASE_VISIBLE_MS = 200;

/** What the checker found; `violations` is empty when all six invariants hold. */
export interface InvariantReport {
  readonly records: number;
  readonly signatures: number;
  readonly batches: number;
  readonly leases: number;
  readonly keysUsed: number;
  readonly violations: string[];
}

const n = (v: unknown) => Number(v);

/**
 * Reads the database after a run and checks the six signing invariants of DESIGN.md:
 * 1. every record has exactly one signature;
 * 2. no two leases of one key were live at once, and committed batches of one key never
 *    overlap in time;
 * 3. every batch was signed by one key (its signatures all carry the batch's key and fence);
 * 4. each acquisition took the least-recently-used free key;
 * 5. the batch size is the job's, constant (only a job's last batches may be short);
 * 6. every stored signature verifies under the public key of the key recorded with it.
 */
export async function checkInvariants(
  db: Knex,
  opts: { jobId?: string; maxShortBatches?: number } = {},
): Promise<InvariantReport> {
  const violations: string[] = [];
  const v = (msg: string) => {
    if (violations.length < 50) violations.push(msg);
  };

  // 1. Exactly one signature per record.
  const [{ records }] = (await db("records").count({ records: "*" })) as { records: number }[];
  const [{ signatures, distinct }] = (await db("signatures").count({ signatures: "*" }).countDistinct({ distinct: "record_id" })) as {
    signatures: number;
    distinct: number;
  }[];
  if (n(signatures) !== n(distinct)) v(`1: ${n(signatures) - n(distinct)} records have more than one signature`);
  const unsigned = (await db("records as r").leftJoin("signatures as s", "s.record_id", "r.id").whereNull("s.record_id").count({ c: "*" })) as {
    c: number;
  }[];
  if (n(unsigned[0]!.c) > 0) v(`1: ${n(unsigned[0]!.c)} records have no signature`);

  // 2. No concurrent key use.
  const leases = (await db("key_leases").select("key_id", "fence", "acquired_at", "expires_at", "released_at", "previous_last_used_at").orderBy([
    { column: "key_id" },
    { column: "fence" },
  ])) as { key_id: string; fence: number; acquired_at: number; expires_at: number; released_at: number | null; previous_last_used_at: number }[];
  const end = (l: (typeof leases)[number]) => (l.released_at == null ? n(l.expires_at) : Math.min(n(l.released_at), n(l.expires_at)));
  for (let i = 1; i < leases.length; i++) {
    const a = leases[i - 1]!;
    const b = leases[i]!;
    if (a.key_id === b.key_id && n(b.acquired_at) < end(a)) {
      v(`2: key ${b.key_id} leased under fence ${b.fence} at ${b.acquired_at} while fence ${a.fence} was live until ${end(a)}`);
    }
  }
  const batchRows = (await db("batches").select("id", "job_id", "key_id", "fence", "size", "start_at", "committed_at", "outcome")) as {
    id: string;
    job_id: string;
    key_id: string;
    fence: number;
    size: number;
    start_at: number;
    committed_at: number | null;
    outcome: string;
  }[];
  const committed = batchRows.filter((b) => b.outcome === "committed");
  // Each committed batch landed while its own lease was live (leases of a key never overlap,
  // above): from its grant to its release or expiry. The batch's start is its claim, which
  // the executor makes while it waits for the lease, so it says nothing about key use.
  const leaseOf = new Map(leases.map((l) => [`${l.key_id}\u0000${n(l.fence)}`, l]));
  for (const b of committed) {
    const lease = leaseOf.get(`${b.key_id}\u0000${n(b.fence)}`);
    if (!lease) v(`2: batch ${b.id} committed under key ${b.key_id} fence ${b.fence}, which no lease had`);
    else if (n(b.committed_at) < n(lease.acquired_at) || n(b.committed_at) > end(lease)) {
      v(`2: batch ${b.id} committed at ${b.committed_at}, outside its lease on ${b.key_id} (fence ${b.fence}: ${lease.acquired_at}..${end(lease)})`);
    }
  }

  // 3. One key per batch.
  const mixed = (await db("signatures").select("batch_id").countDistinct({ k: "key_id" }).countDistinct({ f: "fence" }).groupBy("batch_id")) as {
    batch_id: string;
    k: number;
    f: number;
  }[];
  for (const m of mixed) if (n(m.k) !== 1 || n(m.f) !== 1) v(`3: batch ${m.batch_id} has signatures from ${m.k} keys / ${m.f} fences`);
  const batchById = new Map(batchRows.map((b) => [b.id, b]));
  const sigBatches = (await db("signatures").distinct("batch_id", "key_id", "fence")) as { batch_id: string; key_id: string; fence: number }[];
  for (const s of sigBatches) {
    const b = batchById.get(s.batch_id);
    if (!b) v(`3: signatures of batch ${s.batch_id} have no batch record`);
    else if (b.key_id !== s.key_id || n(b.fence) !== n(s.fence)) v(`3: batch ${s.batch_id} recorded key ${b.key_id}/${b.fence}, signatures say ${s.key_id}/${s.fence}`);
    else if (b.outcome !== "committed") v(`3: batch ${s.batch_id} has stored signatures but outcome ${b.outcome}`);
  }

  // 4. Least recently used first: replay acquisitions in time order.
  // Acquisitions in the same millisecond were concurrent: the one that took the less recently
  // used key locked it first (the other found it locked and moved on), so replay it first.
  // A release is dated just before its statement is sent and seen by grants once it ran: a key
  // released less than RELEASE_VISIBLE_MS before a grant may not have been free to it yet.
  const timeline = [...leases].sort(
    (a, b) => n(a.acquired_at) - n(b.acquired_at) || n(a.previous_last_used_at) - n(b.previous_last_used_at) || a.key_id.localeCompare(b.key_id),
  );
  const allKeys = (await db("keyring_keys").select("id")) as { id: string }[];
  const state = new Map(allKeys.map((k) => [k.id, { lastUsed: 0, busyUntil: 0, expired: false }]));
  const pendingEnds: { key: string; at: number; released: boolean }[] = [];
  for (const l of timeline) {
    const t = n(l.acquired_at);
    for (const e of pendingEnds.filter((x) => x.at <= t)) {
      pendingEnds.splice(pendingEnds.indexOf(e), 1);
      const s = state.get(e.key)!;
      if (e.released) s.lastUsed = Math.max(s.lastUsed, e.at);
      s.expired = !e.released;
    }
    // A key another grant locked a moment before this one, but dated a moment after, was not
    // free to it either: grants are dated when their row lock comes back, not when it is taken.
    const takenConcurrently = (id: string) => timeline.some((o) => o.key_id === id && n(o.acquired_at) > t && n(o.acquired_at) <= t + RELEASE_VISIBLE_MS);
    const older = [...state.entries()].filter(
      ([id, s]) =>
        id !== l.key_id && s.busyUntil <= t - RELEASE_VISIBLE_MS && !s.expired && s.lastUsed < n(l.previous_last_used_at) && !takenConcurrently(id),
    );
    if (older.length > 0) {
      v(`4: key ${l.key_id} (last used ${l.previous_last_used_at}) taken at ${t} while ${older[0]![0]} (last used ${older[0]![1].lastUsed}) was free`);
    }
    const s = state.get(l.key_id)!;
    s.lastUsed = t;
    s.busyUntil = end(l);
    s.expired = false;
    pendingEnds.push({ key: l.key_id, at: end(l), released: l.released_at != null });
  }

  // 5. Batch size constant per job.
  const jobs = (await db("jobs").select("id", "batch_size")) as { id: string; batch_size: number }[];
  for (const job of jobs) {
    if (opts.jobId && job.id !== opts.jobId) continue;
    const mine = committed.filter((b) => b.job_id === job.id);
    const over = mine.filter((b) => n(b.size) > n(job.batch_size));
    if (over.length > 0) v(`5: job ${job.id} has ${over.length} batches larger than its batch size ${job.batch_size}`);
    const short = mine.filter((b) => n(b.size) < n(job.batch_size));
    if (short.length > (opts.maxShortBatches ?? 16)) v(`5: job ${job.id} has ${short.length} short batches`);
  }

  // 6. Every stored signature verifies under its key's public key.
  const keys = new Map(
    ((await db("keyring_keys").select("id", "public_key")) as { id: string; public_key: Buffer }[]).map((k) => [k.id, ed25519PublicKey(k.public_key)]),
  );
  let after = 0;
  let bad = 0;
  for (;;) {
    const page = (await db("signatures as s")
      .join("records as r", "r.id", "s.record_id")
      .select("s.record_id", "s.key_id", "s.signature", "r.payload")
      .where("s.record_id", ">", after)
      .orderBy("s.record_id")
      .limit(5000)) as { record_id: number; key_id: string; signature: Buffer; payload: Buffer }[];
    if (page.length === 0) break;
    for (const row of page) {
      const key = keys.get(row.key_id);
      if (!key || !verifyEd25519(key, row.payload, row.signature)) bad++;
    }
    after = n(page[page.length - 1]!.record_id);
  }
  if (bad > 0) v(`6: ${bad} stored signatures do not verify`);

  return {
    records: n(records),
    signatures: n(signatures),
    batches: committed.length,
    leases: leases.length,
    keysUsed: new Set(committed.map((b) => b.key_id)).size,
    violations,
  };
}
