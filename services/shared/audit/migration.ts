import type { Knex } from "knex";
import { createTableIfMissing, type MigrationModule } from "../storage/migrations/index.js";

/**
 * The mesh's audit trail: one row per audited call of any service. Object ids are stored
 * only as keyed HMACs; values and plain names never reach this table.
 *
 * The trail is shared: every service that writes to it lists this migration among its own
 * (`{ ...auditMigration, name: "000N_audit" }`), and whichever runs first creates the tables
 * (`createTableIfMissing`). `down` leaves them, since other services may still write there.
 */
async function up(knex: Knex): Promise<void> {
  await createTableIfMissing(knex, "audit_events", (t) => {
    t.bigIncrements("id");
    t.bigInteger("time_ms").notNullable();
    t.string("principal", 160).notNullable();
    t.string("peer", 128).notNullable();
    t.string("method", 160).notNullable();
    t.string("outcome", 8).notNullable(); // 'ok' | 'denied' | 'error'
    t.string("code", 32).notNullable();
    t.string("object_kind", 32).notNullable();
    t.string("object_hmac", 64).notNullable(); // '' when the call named no object
    t.integer("version").unsigned().notNullable().defaultTo(0);
    t.index(["time_ms"], "audit_events_time_idx");
    t.index(["object_hmac", "id"], "audit_events_object_idx");
  });
  // The HMAC key when KEYMESH_AUDIT_KEY is not set: one row, created by the first process.
  await createTableIfMissing(knex, "audit_keys", (t) => {
    t.integer("id").notNullable().primary();
    t.binary("hmac_key", 32).notNullable();
    t.bigInteger("created_at").notNullable();
  });
}

async function down(): Promise<void> {}

/** The audit trail's tables, for the migrations of every service that writes to it. */
export const auditMigration: MigrationModule = { name: "audit", up, down };
