import { ConfigError } from "../services/shared/config.js";
import { EXIT, UsageError, type CommandIO } from "./command.js";
import { COMMANDS } from "./commands/index.js";

/** The top-level usage text. */
export function usage(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((n) => n.length));
  const lines = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`);
  return ["Usage: keymesh <command> [options]", "", "Commands:", ...lines, "", "Run `keymesh <command> --help` for a command's options."].join("\n");
}

/**
 * The `keymesh` command dispatcher: picks the command named by the first argument and runs
 * it. Resolves to the process exit status: 0 success, 1 failure, 2 bad usage or
 * configuration (a `ConfigError` names the variable at fault).
 */
export async function main(argv: readonly string[], io: CommandIO = defaultIO()): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === "--help" || name === "-h" || name === "help") {
    io.stdout.write(`${usage()}\n`);
    return name === undefined ? EXIT.usage : EXIT.ok;
  }
  const entry = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
  if (entry === undefined) {
    io.stderr.write(`keymesh: unknown command "${name}"\n\n${usage()}\n`);
    return EXIT.usage;
  }
  const command = await entry.load();
  if (rest.includes("--help") || rest.includes("-h")) {
    io.stdout.write(`${command.usage}\n`);
    return EXIT.ok;
  }
  try {
    return await command.run(rest, io);
  } catch (err) {
    if (err instanceof ConfigError) {
      io.stderr.write(`keymesh: configuration error: ${err.message}\n`);
      return EXIT.usage;
    }
    if (err instanceof UsageError || String((err as { code?: unknown }).code).startsWith("ERR_PARSE_ARGS")) {
      io.stderr.write(`keymesh ${name}: ${(err as Error).message}\n\n${command.usage}\n`);
      return EXIT.usage;
    }
    io.stderr.write(`keymesh ${name}: ${err instanceof Error ? err.message : String(err)}\n`);
    return EXIT.failure;
  }
}

function defaultIO(): CommandIO {
  return { stdout: process.stdout, stderr: process.stderr, env: process.env };
}
