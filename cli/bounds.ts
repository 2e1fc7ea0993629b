import type { IntegerBounds } from "./flags.js";

/**
 * The ranges the services accept, checked before any call so that a bad number gets a usage
 * message naming the flag rather than an encoding error or a server round trip. They are the
 * ranges documented on the request fields in proto/ (SeedRecordsRequest.count,
 * CreateKeyringKeysRequest.count, JobSpec); test/cli.test.ts checks that the server rejects
 * one past each.
 */
export const BOUNDS = {
  /** SeedRecordsRequest.count */
  records: { min: 1, max: 10_000_000 },
  /** CreateKeyringKeysRequest.count: `--keys` may create them all in one call. */
  keys: { min: 1, max: 10_000 },
  /** JobSpec.batch_size */
  batchSize: { min: 1, max: 10_000 },
  /** JobSpec.concurrency */
  concurrency: { min: 1, max: 256 },
  /** JobSpec.lease_ttl_ms */
  leaseTtlMs: { min: 1_000, max: 600_000 },
} as const satisfies Record<string, IntegerBounds>;
