#!/usr/bin/env node
// The keymesh command. Loads the TypeScript sources through tsx (there is no build step),
// starts telemetry before anything else is imported, then hands over to the dispatcher.
import { register } from "tsx/esm/api";

register();

const telemetry = await import(new URL("../services/shared/telemetry/preload.ts", import.meta.url).href);
const { main } = await import("../cli/main.ts");
const code = await main(process.argv.slice(2));
// Export what the command traced (a no-op when tracing is off), then exit: services are closed
// by now, and anything still pending (idle sockets, timers) must not keep the process alive.
await telemetry.shutdownTelemetry();
// The last words (a summary, or how to resume an interrupted job) must reach a pipe before exit.
await Promise.all([process.stdout, process.stderr].map((s) => new Promise((resolve) => s.write("", resolve))));
process.exit(code);
