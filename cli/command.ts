/**
 * The contract between the `keymesh` dispatcher and its commands: one file per command
 * under cli/commands/, listed in cli/commands/index.ts.
 */

/** Where a command writes; tests pass their own. */
export interface CommandIO {
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream;
  readonly env: Readonly<Record<string, string | undefined>>;
  /** Where passwords are read from (default process.stdin). */
  readonly stdin?: NodeJS.ReadableStream;
}

/** A `keymesh` sub-command. */
export interface Command {
  /** The word on the command line, e.g. "serve". */
  readonly name: string;
  /** One line for `keymesh --help` (the same as its line in cli/commands/index.ts). */
  readonly summary: string;
  /** Full usage text for `keymesh <command> --help` and `keymesh help <command>`. */
  readonly usage: string;
  /** Runs the command with the arguments after its name; resolves to the exit status. */
  run(args: string[], io: CommandIO): Promise<number>;
}

/** Bad command-line usage; the dispatcher prints the message and where to find help, exit status 2. */
export class UsageError extends Error {
  override readonly name = "UsageError";
}

/** Exit statuses shared by every command. */
export const EXIT = { ok: 0, failure: 1, usage: 2 } as const;
