import { readFileSync } from "node:fs";
import { ConfigError } from "../services/shared/config.js";
import { EXIT, UsageError, type CommandIO } from "./command.js";
import { COMMANDS } from "./commands/index.js";
import { CliError, describeFailure } from "./failure.js";

/** The top-level usage text. */
export function usage(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((n) => n.length));
  const lines = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`);
  return [
    "Usage: keymesh <command> [options]",
    "",
    "Commands:",
    ...lines,
    "",
    "Options:",
    "  -h, --help      show this help",
    "  -V, --version   print keymesh's version",
    "",
    "`keymesh help <command>` or `keymesh <command> --help` shows a command's options.",
  ].join("\n");
}

/** keymesh's version, from package.json. */
export function version(): string {
  const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string };
  return pkg.version;
}

/**
 * The `keymesh` command dispatcher: picks the command named by the first argument and runs
 * it. Resolves to the process exit status: 0 success, 1 failure, 2 bad usage or
 * configuration (a `ConfigError` names the variable at fault), 128 + n after signal n.
 * Every failure is one line on stderr, `keymesh <command>: what happened — what to do`.
 */
export async function main(argv: readonly string[], io: CommandIO = defaultIO()): Promise<number> {
  const [first, ...rest] = argv;
  if (first === "--version" || first === "-V") {
    io.stdout.write(`keymesh ${version()}\n`);
    return EXIT.ok;
  }
  if (first === undefined) {
    io.stderr.write(`${usage()}\n`);
    return EXIT.usage;
  }
  if (first === "--help" || first === "-h" || (first === "help" && rest.length === 0)) {
    io.stdout.write(`${usage()}\n`);
    return EXIT.ok;
  }
  // `keymesh help sign` is `keymesh sign --help`.
  const helpOnly = first === "help";
  const name = helpOnly ? rest[0]! : first;
  const entry = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
  if (entry === undefined) {
    io.stderr.write(`keymesh: unknown command "${name}" — run \`keymesh --help\` for the list\n`);
    return EXIT.usage;
  }
  const command = await entry.load();
  if (helpOnly || rest.includes("--help") || rest.includes("-h")) {
    io.stdout.write(`${command.usage.trimEnd()}\n`);
    return EXIT.ok;
  }
  try {
    return await command.run(rest, io);
  } catch (err) {
    if (err instanceof ConfigError) {
      io.stderr.write(`keymesh ${name}: configuration error: ${err.message}\n`);
      return EXIT.usage;
    }
    if (err instanceof UsageError) {
      io.stderr.write(`keymesh ${name}: ${err.message} — see \`keymesh ${name} --help\`\n`);
      return EXIT.usage;
    }
    if (err instanceof CliError) {
      io.stderr.write(`keymesh ${name}: ${err.message}\n`);
      return err.exitCode;
    }
    io.stderr.write(`keymesh ${name}: ${describeFailure(err, { command: name })}\n`);
    return EXIT.failure;
  }
}

function defaultIO(): CommandIO {
  return { stdout: process.stdout, stderr: process.stderr, env: process.env };
}
