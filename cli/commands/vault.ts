import { parseArgs } from "node:util";
import { CLIENT_OPTIONS, CLIENT_USAGE } from "../connect.js";
import { EXIT, UsageError, type Command } from "../command.js";
import { vaultClient } from "../vault-client.js";

const USAGE = `Usage: keymesh vault <subcommand> [options]

Master-key rotation for the whole mesh (administrators only):
  status           rows per master-key version (and per sealed row set), which is primary
  rotate           make the next configured master-key version primary and start the rewrap
  rewrap [--limit N]   move rows to the primary now (the background rewrap does this too)
  retire VERSION   retire a version once no row uses it

The production procedure (add the key everywhere, rotate, rewrap, retire, remove) is in
docs/operations.md.

Options:
${CLIENT_USAGE}
      --json             machine-readable output
  -h, --help       show this help`;

/** `keymesh vault ...`: master-key status and rotation. */
export const vaultCommand: Command = {
  name: "vault",
  summary: "master-key status, rotation, rewrap and retirement",
  usage: USAGE,
  async run(args, io) {
    const { values, positionals } = parseArgs({
      args,
      options: { ...CLIENT_OPTIONS, json: { type: "boolean", default: false }, limit: { type: "string" } },
      allowPositionals: true,
    });
    const [sub, ...rest] = positionals;
    const client = vaultClient(values, io);
    const out = (obj: unknown, text: string) => io.stdout.write(values.json ? `${JSON.stringify(obj, (_, v: unknown) => (typeof v === "bigint" ? Number(v) : v), 2)}\n` : text);
    const table = (versions: { version: number; primary: boolean; retired: boolean; rowCount: bigint; rowsBySet: Record<string, bigint> }[]) =>
      versions
        .map((v) => {
          const sets = Object.entries(v.rowsBySet).map(([n, c]) => `${n}=${c}`).join(" ");
          return `v${v.version}  ${(v.primary ? "primary" : v.retired ? "retired" : "active").padEnd(8)}  ${String(v.rowCount).padStart(8)} rows  ${sets}\n`;
        })
        .join("");
    switch (sub) {
      case "status": {
        const r = await client.getMasterKeyStatus({});
        out(r.versions, table(r.versions));
        return EXIT.ok;
      }
      case "rotate": {
        const r = await client.rotateMasterKey({});
        out(r, `master key v${r.primaryVersion} is primary (was v${r.previousVersion}); rewrap ${r.rewrapQueued ? "queued" : "not queued"}\n`);
        return EXIT.ok;
      }
      case "rewrap": {
        const limit = values.limit === undefined ? 0 : Number(values.limit);
        if (!Number.isInteger(limit) || limit < 0) throw new UsageError("--limit expects a number of rows");
        const r = await client.rewrap({ limit });
        out(r, `rewrapped ${r.rewrapped} rows; ${r.remaining} remain on older versions\n`);
        return r.remaining === 0n ? EXIT.ok : EXIT.failure;
      }
      case "retire": {
        if (rest.length !== 1 || !/^\d+$/.test(rest[0]!)) throw new UsageError("retire expects a VERSION number");
        const r = await client.retireMasterKey({ version: Number(rest[0]) });
        out(r.versions, table(r.versions));
        return EXIT.ok;
      }
      default:
        throw new UsageError(sub === undefined ? "name a subcommand" : `unknown subcommand "${sub}"`);
    }
  },
};
