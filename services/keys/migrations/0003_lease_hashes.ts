import type { Knex } from "knex";
import type { MigrationModule } from "../../shared/storage/migrations/index.js";

/**
 * Leases become capabilities: the SHA-256 of the current lease id on the key's row (renew,
 * release and the wrapped key compare it in constant time) and on the lease history row, and
 * when a lease that was never released is found lapsed (the next grant of the key records it),
 * so a crashed holder's lease reads as lapsed rather than still open.
 */
async function up(knex: Knex): Promise<void> {
  if (!(await knex.schema.hasColumn("keyring_keys", "lease_hash"))) {
    await knex.schema.alterTable("keyring_keys", (t) => t.binary("lease_hash", 32).nullable());
  }
  if (!(await knex.schema.hasColumn("key_leases", "lease_hash"))) {
    await knex.schema.alterTable("key_leases", (t) => t.binary("lease_hash", 32).nullable());
  }
  if (!(await knex.schema.hasColumn("key_leases", "lapsed_at"))) {
    await knex.schema.alterTable("key_leases", (t) => t.bigInteger("lapsed_at").nullable());
  }
}

async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable("key_leases", (t) => {
    t.dropColumn("lapsed_at");
    t.dropColumn("lease_hash");
  });
  await knex.schema.alterTable("keyring_keys", (t) => t.dropColumn("lease_hash"));
}

/** Keys 0003: hashed lease ids and lapsed leases. */
export const leaseHashesMigration: MigrationModule = { name: "0003_lease_hashes", up, down };
