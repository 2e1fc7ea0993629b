/**
 * Which mesh service a span belongs to. The services of one process share one SDK, but each
 * reports under its own `service.name` (keymesh-keys, keymesh-executor, ...), so Jaeger lists
 * the mesh even when `keymesh serve` runs all seven together. The server interceptor records
 * the called service in the context; the tracer provider of `service-tracer-provider.ts` reads
 * it whenever a span starts, so the SQL, Redis and domain spans a handler causes follow it.
 */
import { context, createContextKey, type Context } from "@opentelemetry/api";

const serviceNameKey = createContextKey("keymesh.service.name");

/** `ctx` with `name` as the service that spans started in it belong to. */
export function contextWithServiceName(ctx: Context, name: string): Context {
  return ctx.setValue(serviceNameKey, name);
}

/** The service name recorded in `ctx`, if any. */
export function serviceNameOf(ctx: Context): string | undefined {
  const value = ctx.getValue(serviceNameKey);
  return typeof value === "string" ? value : undefined;
}

/**
 * Runs `fn` as work of service `name` (e.g. `keymesh-executor`): spans it starts, directly or
 * in callbacks and timers it schedules, carry that service name. For background work that no
 * RPC starts.
 */
export function runAsService<T>(name: string, fn: () => T): T {
  return context.with(contextWithServiceName(context.active(), name), fn);
}

/**
 * The service name for a Connect service's full name, by the proto package convention
 * `keymesh.<service>.v<N>.*`: `keymesh.keys.v1.KeyManagementService` → `keymesh-keys`.
 * Anything else (grpc.health.v1.Health) has none and keeps the caller's.
 */
export function meshServiceName(typeName: string): string | undefined {
  const match = /^keymesh\.([a-z][a-z0-9_]*)\.v\d+\./.exec(typeName);
  return match ? `keymesh-${match[1]}` : undefined;
}
