import { loadServiceModules, SERVICE_NAMES, UnknownServiceError } from "../../services/registry.js";
import { ConfigError, loadConfig, type Config } from "../../services/shared/config.js";
import { startHost } from "../../services/shared/server/host.js";
import { createLogger } from "../../services/shared/logger.js";
import { ensureRootToken } from "../../services/shared/root-token.js";
import { reportTelemetry, shutdownTelemetry } from "../../services/shared/telemetry/sdk.js";
import { EXIT, UsageError, type Command } from "../command.js";
import { parseFlags } from "../flags.js";

/** Extra time beyond the shutdown budget before the process gives up and exits anyway. */
const WATCHDOG_SLACK_MS = 5_000;

const USAGE = `Usage: keymesh serve [service...] [options]

Runs the named services (default: all of ${SERVICE_NAMES.join(", ")}) in one process
on one port serving gRPC, gRPC-Web and Connect, with health and reflection.

Options:
  -p, --port <port>   port to listen on (KEYMESH_PORT, default 8080)
      --host <host>   address to bind (KEYMESH_HOST, default 127.0.0.1)
      --no-migrate    do not bring the database schema up to date at start
      --dev           development: accept the root token in the data directory as an
                      admin, creating it (mode 0600) if needed; the CLI picks it up
  -h, --help          show this help

SIGTERM or SIGINT shut down gracefully within KEYMESH_SHUTDOWN_TIMEOUT_MS.`;

/** `keymesh serve [service...]`: runs services until SIGTERM/SIGINT, then drains and exits 0. */
export const serveCommand: Command = {
  name: "serve",
  summary: "run services (all seven by default) on one port",
  usage: USAGE,
  async run(args, io) {
    const { values, positionals } = parseFlags(
      args,
      {
        port: { type: "string", short: "p" },
        host: { type: "string" },
        "no-migrate": { type: "boolean", default: false },
        dev: { type: "boolean", default: false },
      },
      true,
    );
    const config = configWithFlags(io.env, values);
    let modules;
    try {
      modules = await loadServiceModules(positionals);
    } catch (err) {
      if (err instanceof UnknownServiceError) throw new UsageError(err.message);
      throw err;
    }
    const logger = createLogger({ level: config.logLevel });
    reportTelemetry(logger);
    // Listen before starting so that a signal during start-up still shuts down cleanly.
    const stopSignal = new Promise<NodeJS.Signals>((resolve) => {
      const onSignal = (s: NodeJS.Signals) => {
        process.off("SIGTERM", onSignal);
        process.off("SIGINT", onSignal);
        resolve(s);
      };
      process.on("SIGTERM", onSignal);
      process.on("SIGINT", onSignal);
    });
    let rootToken: string | undefined;
    if (values.dev) {
      const root = ensureRootToken(config.dataDir);
      rootToken = root.token;
      // The path, never the token: logs travel further than the data directory.
      logger.info({ path: root.path, created: root.created }, "development root token ready (an admin credential; the CLI on this machine uses it)");
    }
    const host = await startHost({ services: modules, config, logger, migrate: !values["no-migrate"], ...(rootToken === undefined ? {} : { rootToken }) });
    const signal = await stopSignal;
    logger.info({ signal }, "signal received");
    // A second signal, or a shutdown that overruns its budget, ends the process at once.
    const force = (reason: string) => {
      logger.error({ reason }, "forced exit");
      process.exit(EXIT.failure);
    };
    process.once("SIGTERM", () => force("second SIGTERM"));
    process.once("SIGINT", () => force("second SIGINT"));
    setTimeout(() => force("shutdown overran its budget"), config.shutdownTimeoutMs + WATCHDOG_SLACK_MS).unref();

    await host.close();
    await shutdownTelemetry().catch((err: unknown) => logger.warn({ err: String(err) }, "telemetry flush failed"));
    return EXIT.ok;
  },
};

/**
 * The configuration with --port and --host taking precedence over KEYMESH_PORT and KEYMESH_HOST;
 * a bad flag value is blamed on the flag, not on the variable it stands in for.
 */
function configWithFlags(env: Readonly<Record<string, string | undefined>>, flags: { port?: string; host?: string }): Config {
  try {
    return loadConfig(env, { port: flags.port, host: flags.host });
  } catch (err) {
    if (err instanceof ConfigError && err.variable === "KEYMESH_PORT" && flags.port !== undefined) {
      throw new UsageError(`--port: expected ${err.expected}`);
    }
    if (err instanceof ConfigError && err.variable === "KEYMESH_HOST" && flags.host !== undefined) {
      throw new UsageError(`--host: expected ${err.expected}`);
    }
    throw err;
  }
}
