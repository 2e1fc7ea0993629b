import { parseArgs, type ParseArgsConfig } from "node:util";
import { UsageError } from "./command.js";

type Options = NonNullable<ParseArgsConfig["options"]>;

/**
 * `node:util`'s parseArgs with messages for people: a negative number after a value-taking
 * flag (`--records -5`) is read as that flag's value, so the range check can say what is
 * wrong instead of Node's "argument is ambiguous"; parse errors become one-line `UsageError`s.
 */
export function parseFlags<O extends Options, P extends boolean = false>(args: readonly string[], options: O, allowPositionals?: P) {
  // "--records" and its short form "-r" both name the long option "records".
  const valueFlags = new Map<string, string>();
  for (const [name, o] of Object.entries(options)) {
    if (o.type !== "string") continue;
    valueFlags.set(`--${name}`, name);
    if (o.short !== undefined) valueFlags.set(`-${o.short}`, name);
  }
  const joined: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const name = valueFlags.get(args[i]!);
    const next = args[i + 1];
    if (name !== undefined && next !== undefined && /^-\d/.test(next)) {
      joined.push(`--${name}=${next}`);
      i++;
    } else joined.push(args[i]!);
  }
  try {
    return parseArgs({ args: joined, options, allowPositionals: (allowPositionals ?? false) as P, strict: true });
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    if (typeof code === "string" && code.startsWith("ERR_PARSE_ARGS")) throw new UsageError(parseError((err as Error).message));
    throw err;
  }
}

/** Node's parse errors, rephrased without its advice about its own syntax. */
function parseError(message: string): string {
  const flag = /'(?:-\w, )?(--?[\w-]+)/.exec(message)?.[1] ?? "an option";
  if (/argument missing|argument is ambiguous/.test(message)) return `${flag} needs a value`;
  if (/does not take an argument/.test(message)) return `${flag} takes no value`;
  if (message.startsWith("Unknown option")) return `unknown option ${flag}`;
  const unexpected = /^Unexpected argument '([^']*)'/.exec(message);
  if (unexpected) return `unexpected argument "${unexpected[1]}"`;
  return message.split("\n")[0]!;
}

/** Bounds of an integer flag, inclusive. */
export interface IntegerBounds {
  readonly min: number;
  readonly max: number;
}

/**
 * An integer flag's value checked against `bounds`; undefined when the flag was not given.
 * Only plain decimal digits are accepted (not "1e6" or "0x10").
 */
export function integerFlag(name: string, raw: string | undefined, bounds: IntegerBounds): number | undefined {
  if (raw === undefined) return undefined;
  const value = /^-?\d+$/.test(raw.trim()) ? Number(raw) : Number.NaN;
  if (!Number.isSafeInteger(value) || value < bounds.min || value > bounds.max) {
    throw new UsageError(`--${name} must be an integer from ${bounds.min} to ${bounds.max}, got "${raw}"`);
  }
  return value;
}
