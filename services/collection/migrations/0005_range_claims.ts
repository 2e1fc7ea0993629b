import type { Knex } from "knex";
import { createTableIfMissing, dialectOf, type MigrationModule } from "../../shared/storage/migrations/index.js";

/**
 * Claims by id range. A claim is one row naming the first and last record id it covers
 * (`first_id`, `last_id`) and its state; records carry no claim columns any more, so claiming
 * and committing a batch write no record rows. Whether a record is signed is whether its
 * signature row exists (the signatures primary key keeps it once).
 *
 * `claim_cursor` is the highest record id handed out in a fresh claim: new claims start
 * after it, taken under its row lock, so fresh ranges never overlap. An expired or released
 * claim's range is claimed again under a new claim id (the old one is superseded), which is
 * how records of a crashed executor come back.
 *
 * Upgrading: claims made under the old scheme are closed (their records were marked in the
 * dropped columns only), and the cursor starts at 0; a claim skips records that already have
 * a signature, so everything unsigned is claimed again and nothing signed twice.
 */
async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable("claims", (t) => {
    t.bigInteger("first_id").notNullable().defaultTo(0);
    t.bigInteger("last_id").notNullable().defaultTo(0);
    // 'open' (records not yet stored; claimable again once expired), 'committed' or 'superseded'.
    t.string("state", 16).notNullable().defaultTo("open");
  });
  await knex("claims").update({ state: "superseded" });
  await knex.schema.alterTable("claims", (t) => {
    t.index(["state", "expires_at"], "claims_state_expiry_idx");
  });
  await createTableIfMissing(knex, "claim_cursor", (t) => {
    t.integer("id").notNullable().primary();
    t.bigInteger("last_id").notNullable();
  });
  await knex("claim_cursor").insert({ id: 1, last_id: 0 }).onConflict("id").ignore();
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
  await knex.schema.dropTableIfExists("claim_cursor");
  await knex.schema.alterTable("claims", (t) => {
    t.dropIndex(["state", "expires_at"], "claims_state_expiry_idx");
  });
  await knex.schema.alterTable("claims", (t) => {
    t.dropColumns("first_id", "last_id", "state");
  });
}

/** Collection 0005: claims by id range; records lose their claim columns. */
export const rangeClaimsMigration: MigrationModule = { name: "0005_range_claims", up, down };
