import type { Knex } from "knex";
import type { MigrationModule } from "../../shared/storage/migrations/index.js";

/**
 * When an executor last worked on a job: every executor running a job refreshes it every
 * second. A running job nobody has refreshed for a while reads as interrupted (cancelled,
 * or its executors are gone) instead of running for ever, and RunJob with its id resumes it.
 */
async function up(knex: Knex): Promise<void> {
  if (!(await knex.schema.hasColumn("jobs", "heartbeat_at"))) {
    await knex.schema.alterTable("jobs", (t) => t.bigInteger("heartbeat_at").notNullable().defaultTo(0));
  }
}

async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable("jobs", (t) => t.dropColumn("heartbeat_at"));
}

/** Executor 0002: job heartbeats. */
export const jobHeartbeatMigration: MigrationModule = { name: "0002_job_heartbeat", up, down };
