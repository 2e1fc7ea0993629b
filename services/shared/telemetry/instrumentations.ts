/**
 * The library instrumentations the mesh uses, and the module specifiers the
 * ESM loader hook must wrap for them.
 */
import type { Instrumentation } from "@opentelemetry/instrumentation";

/**
 * Bare specifiers that application code imports and that an instrumentation
 * patches at the package entry point. import-in-the-middle wraps exactly
 * these; anything else loads untouched.
 */
export const instrumentedModules: readonly string[] = ["ioredis", "knex", "mysql2", "mysql2/promise"];

/**
 * Creates (and thereby enables) the knex, mysql2 and ioredis instrumentations.
 * knex and ioredis only record queries made inside a trace (an RPC or a
 * `withSpan` block), so pool warm-up and background polling stay quiet.
 * Loaded lazily so that a process without telemetry never reads these packages.
 */
export async function createInstrumentations(): Promise<Instrumentation[]> {
  const [{ KnexInstrumentation }, { MySQL2Instrumentation }, { IORedisInstrumentation }] = await Promise.all([
    import("@opentelemetry/instrumentation-knex"),
    import("@opentelemetry/instrumentation-mysql2"),
    import("@opentelemetry/instrumentation-ioredis"),
  ]);
  return [
    new KnexInstrumentation({ requireParentSpan: true }),
    new MySQL2Instrumentation(),
    new IORedisInstrumentation({ requireParentSpan: true }),
  ];
}
