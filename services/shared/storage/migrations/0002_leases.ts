import type { Knex } from "knex";
import { tableDefaults, type MigrationModule } from "./migration.js";

/**
 * Lease history and job settings.
 *
 * `key_leases` has one row per key acquisition, written in the same transaction that bumps
 * the key's fence: who took which key under which fence, when, and how long ago the key had
 * last been used. The invariants checker reads it to prove least-recently-used order and
 * that no two leases of one key were ever live at once; operators read it to see who holds
 * what.
 */
async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable("key_leases", (t) => {
    tableDefaults(knex, t);
    t.bigIncrements("id");
    t.string("key_id", 64).notNullable();
    t.bigInteger("fence").notNullable();
    t.string("holder", 128).notNullable();
    t.bigInteger("acquired_at").notNullable();
    t.bigInteger("previous_last_used_at").notNullable();
    t.bigInteger("expires_at").notNullable(); // moves with each renewal
    t.bigInteger("released_at").nullable();
    t.unique(["key_id", "fence"], { indexName: "key_leases_key_fence_uq" });
    t.index(["acquired_at"], "key_leases_acquired_idx");
  });
  await knex.schema.alterTable("jobs", (t) => {
    t.integer("lease_ttl_ms").notNullable().defaultTo(10_000);
  });
}

async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable("jobs", (t) => {
    t.dropColumn("lease_ttl_ms");
  });
  await knex.schema.dropTableIfExists("key_leases");
}

/** Migration 0002: lease history and the job's lease TTL. */
export const leasesMigration: MigrationModule = { name: "0002_leases", up, down };
