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
export const instrumentedModules: readonly string[] = ["ioredis", "knex"];

/**
 * Creates (and thereby enables) the knex and ioredis instrumentations. They
 * only record queries made inside a trace (an RPC or a `withSpan` block), so
 * pool warm-up and background polling stay quiet. knex's span covers every SQL
 * statement on both dialects (MariaDB through mysql2, SQLite); mysql2's own
 * instrumentation is left out so that a statement is one span, not two.
 * Loaded lazily so that a process without telemetry never reads these packages.
 */
export async function createInstrumentations(): Promise<Instrumentation[]> {
  const [{ KnexInstrumentation }, { IORedisInstrumentation }] = await Promise.all([
    import("@opentelemetry/instrumentation-knex"),
    import("@opentelemetry/instrumentation-ioredis"),
  ]);
  return [new KnexInstrumentation({ requireParentSpan: true }), new IORedisInstrumentation({ requireParentSpan: true })];
}
