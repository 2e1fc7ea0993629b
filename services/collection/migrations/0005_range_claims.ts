import type { Knex } from "knex";
import { dialectOf, type MigrationModule } from "../../shared/storage/migrations/index.js";

/**
 * Claims by id range. A claim is one row naming the first and last record id it covers
 * (`first_id`, `last_id`) and its state; records carry no claim columns any more, so claiming
 * and committing a batch write no record rows. Whether a record is signed is whether its
 * signature row exists (the signatures primary key keeps it once).
 *
 * A fresh claim takes the records after the highest id any claim covers (`MAX(last_id)`,
 * read through an index) and records the first of them in `fresh_first`, which is unique:
 * of two claims that read the same end at once, the second insert fails and that claim looks
 * again, so fresh ranges never overlap and claiming needs no lock. An expired or released
 * claim's range is claimed again under a new claim id (the old one is superseded, and the
 * new claim's `fresh_first` is NULL), which is how records of a crashed executor come back.
 *
 * Upgrading: claims made under the old scheme are closed (their records were marked in the
 * dropped columns only). The records already there, signed or not, are covered by one open,
 * expired claim: fresh claims start after them, and the unsigned ones among them are taken
 * over a batch at a time once the fresh records run out (taking over skips signed records),
 * so nothing is signed twice and nothing is left behind.
 */
async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable("claims", (t) => {
    t.bigInteger("first_id").notNullable().defaultTo(0);
    t.bigInteger("last_id").notNullable().defaultTo(0);
    // The first record id of a fresh claim (NULL for a claim taking over an old range).
    t.bigInteger("fresh_first").nullable();
    // 'open' (records not yet stored; claimable again once expired), 'committed' or 'superseded'.
    t.string("state", 16).notNullable().defaultTo("open");
  });
  await knex("claims").update({ state: "superseded" });
  await knex.schema.alterTable("claims", (t) => {
    t.index(["state", "expires_at"], "claims_state_expiry_idx");
    t.index(["last_id"], "claims_last_id_idx");
    t.unique(["fresh_first"], { indexName: "claims_fresh_first_uq" });
  });
  const [range] = (await knex("records").min({ first: "id" }).max({ last: "id" })) as { first: number | string | null; last: number | string | null }[];
  if (range?.last != null) {
    await knex("claims").insert({
      id: "legacy-records",
      job_id: "",
      claimant: "migration 0005_range_claims",
      size: 0,
      claimed: 0,
      claimed_at: Date.now(),
      expires_at: 0,
      first_id: Number(range.first),
      last_id: Number(range.last),
      state: "open",
    });
  }
  await knex.schema.alterTable("records", (t) => {
    t.dropIndex(["signed", "claim_expires_at", "id"], "records_claim_idx");
    t.dropIndex(["claim_id"], "records_claim_id_idx");
  });
  const dropped = ["signed", "claim_id", "claimed_by", "claim_expires_at", "job_id"];
  if (dialectOf(knex) === "sqlite") {
    // SQLite drops an unindexed column in place; knex would rebuild the table, which the
    // signatures' foreign key to records forbids.
    for (const column of dropped) await knex.raw(`ALTER TABLE records DROP COLUMN ${column}`);
  } else {
    await knex.schema.alterTable("records", (t) => {
      t.dropColumns(...dropped);
    });
  }
}

async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable("records", (t) => {
    t.boolean("signed").notNullable().defaultTo(false);
    t.string("claim_id", 64).nullable();
    t.string("claimed_by", 128).nullable();
    t.bigInteger("claim_expires_at").notNullable().defaultTo(0);
    t.string("job_id", 64).nullable();
    t.index(["signed", "claim_expires_at", "id"], "records_claim_idx");
    t.index(["claim_id"], "records_claim_id_idx");
  });
  await knex("records").whereIn("id", knex("signatures").select("record_id")).update({ signed: true });
  await knex.schema.alterTable("claims", (t) => {
    t.dropIndex(["state", "expires_at"], "claims_state_expiry_idx");
    t.dropIndex(["last_id"], "claims_last_id_idx");
    t.dropUnique(["fresh_first"], "claims_fresh_first_uq");
  });
  await knex.schema.alterTable("claims", (t) => {
    t.dropColumns("first_id", "last_id", "fresh_first", "state");
  });
}

/** Collection 0005: claims by id range; records lose their claim columns. */
export const rangeClaimsMigration: MigrationModule = { name: "0005_range_claims", up, down };
