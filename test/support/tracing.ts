/**
 * Tracing as `keymesh serve` installs it (instrumentations, SQL span renaming, per-service
 * providers), exporting to memory. Import it before anything that imports knex
 * or ioredis (the mesh): the instrumentations patch those packages as they load.
 */
import { createRequire } from "node:module";
import { InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { installTracing } from "../../services/shared/telemetry/sdk.js";

/** Every span the process finished. */
export const spanExporter = new InMemorySpanExporter();

const sdk = await installTracing(new SimpleSpanProcessor(spanExporter));
// Vitest imports packages by file URL, which the loader hook's list of bare names does not
// match; loading ioredis through `require` first lets require-in-the-middle patch the one
// module instance that the later `import` gets too (knex is patched through its internal
// requires either way).
createRequire(import.meta.url)("ioredis");

/** Stops the SDK (unpatches nothing already loaded; for afterAll). */
export const stopTracing = () => sdk.shutdown();
