#!/usr/bin/env node
// The keymesh command. Loads the TypeScript sources through tsx (there is no build step),
// starts telemetry before anything else is imported, then hands over to the dispatcher.
import { register } from "tsx/esm/api";

register();

const { existsSync } = await import("node:fs");
const preload = new URL("../services/shared/telemetry/preload.ts", import.meta.url);
if (existsSync(preload)) await import(preload.href);

const { main } = await import("../cli/main.ts");
const code = await main(process.argv.slice(2));
// Services are closed by now; anything still pending (idle sockets, timers) must not keep us alive.
process.exit(code);
