import { parseArgs } from "node:util";
import { Code } from "@connectrpc/connect";
import { VersionState } from "../../gen/keymesh/vault/v1/vault_pb.js";
import { CLIENT_OPTIONS, CLIENT_USAGE } from "../connect.js";
import { EXIT, UsageError, type Command } from "../command.js";
import { isCode, readAll, readValueFile, selectorOf, stdinOf, vaultClient, when } from "../vault-client.js";

const USAGE = `Usage: keymesh secrets <subcommand> [options]

Subcommands:
  put NAME [--file F | --value-stdin | --value V] [--label k=v ...] [--cas N]
                         store a new version (creates the secret on first put)
  get NAME [--version N] write the value to stdout (raw bytes, no newline added)
  versions NAME          list the versions (metadata only)
  delete NAME --version N      soft-delete a version (undelete brings it back)
  undelete NAME --version N    restore a soft-deleted version
  destroy NAME --version N     erase a version's ciphertext for good
  list [PREFIX]          list your secrets whose names start with PREFIX
  grant NAME PRINCIPAL   let PRINCIPAL ("user:<id>" or "service:<name>") read the secret
  revoke NAME PRINCIPAL  withdraw that access

NAME is a secret's name or its id (a UUID). Values are read from a file or stdin, so they
never appear in the shell history or the process list; --value V puts V on the command line
and is only for throwaway values. Without --file, --value-stdin or --value, put reads stdin.

Options:
${CLIENT_USAGE}
      --json             machine-readable output (versions, list)
  -h, --help             show this help`;

const OPTIONS = {
  ...CLIENT_OPTIONS,
  file: { type: "string" },
  "value-stdin": { type: "boolean", default: false },
  value: { type: "string" },
  label: { type: "string", multiple: true },
  cas: { type: "string" },
  version: { type: "string" },
  json: { type: "boolean", default: false },
} as const;

function versionFlag(raw: string | undefined, required: boolean): number {
  if (raw === undefined) {
    if (required) throw new UsageError("--version N is required");
    return 0;
  }
  if (!/^\d+$/.test(raw) || Number(raw) < 1) throw new UsageError(`--version must be a version number from 1, got "${raw}"`);
  return Number(raw);
}

function labelsOf(raw: readonly string[] | undefined): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const entry of raw ?? []) {
    const eq = entry.indexOf("=");
    if (eq < 1) throw new UsageError(`--label expects key=value, got "${entry}"`);
    labels[entry.slice(0, eq)] = entry.slice(eq + 1);
  }
  return labels;
}

const STATE_NAMES: Record<number, string> = { [VersionState.ACTIVE]: "active", [VersionState.DELETED]: "deleted", [VersionState.DESTROYED]: "destroyed" };

/** `keymesh secrets ...`: the vault's secrets from the command line. */
export const secretsCommand: Command = {
  name: "secrets",
  summary: "store, read, version and share secrets in the vault",
  usage: USAGE,
  async run(args, io) {
    const { values, positionals } = parseArgs({ args, options: OPTIONS, allowPositionals: true });
    const [sub, ...rest] = positionals;
    const client = vaultClient(values, io);
    const need = (n: number, what: string) => {
      if (rest.length !== n) throw new UsageError(`${sub} expects ${what}`);
    };
    const idOf = async (nameOrId: string) => (await client.getSecretMetadata({ selector: selectorOf(nameOrId) })).secret!.secretId;

    switch (sub) {
      case "put": {
        need(1, "NAME");
        const name = rest[0]!;
        const sources = [values.file !== undefined, values["value-stdin"], values.value !== undefined].filter(Boolean).length;
        if (sources > 1) throw new UsageError("give the value one way: --file, --value-stdin or --value");
        let value: Uint8Array;
        if (values.file !== undefined) value = await readValueFile(values.file);
        else if (values.value !== undefined) {
          io.stderr.write("warning: --value puts the secret in your shell history and the process list; prefer --file or stdin\n");
          value = new TextEncoder().encode(values.value);
        } else {
          const stdin = stdinOf(io);
          if (stdin.isTTY === true) io.stderr.write("reading the value from stdin; end it with Ctrl-D\n");
          value = await readAll(stdin);
        }
        const labels = labelsOf(values.label);
        const cas = values.cas === undefined ? undefined : Number(values.cas);
        if (cas !== undefined && (!Number.isInteger(cas) || cas < 0)) throw new UsageError("--cas expects the current version number (0: create only)");
        let exists = cas !== undefined && cas > 0;
        if (cas === undefined) {
          try {
            await client.getSecretMetadata({ selector: selectorOf(name) });
            exists = true;
          } catch (err) {
            if (!isCode(err, Code.NotFound)) throw err;
          }
        }
        if (!exists && cas === undefined) {
          const r = await client.createSecret({ name, value, labels });
          io.stdout.write(`created ${name} (id ${r.secret!.secretId}), version ${r.version}\n`);
        } else {
          if (Object.keys(labels).length > 0) throw new UsageError("--label applies only when the secret is created");
          const r = await client.addSecretVersion({ selector: selectorOf(name), value, ...(cas === undefined ? {} : { expectedVersion: cas }) });
          io.stdout.write(`${name}: version ${r.version} (id ${r.secret!.secretId})\n`);
        }
        return EXIT.ok;
      }
      case "get": {
        need(1, "NAME");
        const r = await client.getSecret({ selector: selectorOf(rest[0]!), version: versionFlag(values.version, false) });
        io.stdout.write(Buffer.from(r.value));
        return EXIT.ok;
      }
      case "versions": {
        need(1, "NAME");
        const r = await client.getSecretMetadata({ selector: selectorOf(rest[0]!) });
        const rows = r.versions.map((v) => ({
          version: v.version,
          state: STATE_NAMES[v.state] ?? "unknown",
          size: v.size,
          masterKeyVersion: v.masterKeyVersion,
          created: when(v.createdAtMs),
          deleted: when(v.deletedAtMs),
        }));
        if (values.json) io.stdout.write(`${JSON.stringify({ secretId: r.secret!.secretId, name: r.secret!.name, versions: rows }, null, 2)}\n`);
        else {
          io.stdout.write(`${r.secret!.name || r.secret!.secretId} (id ${r.secret!.secretId}, owner ${r.secret!.ownerId})\n`);
          for (const v of rows) io.stdout.write(`  v${v.version}  ${v.state.padEnd(9)}  ${String(v.size).padStart(6)} B  key v${v.masterKeyVersion}  ${v.created}${v.deleted === "-" ? "" : `  deleted ${v.deleted}`}\n`);
        }
        return EXIT.ok;
      }
      case "delete":
      case "undelete":
      case "destroy": {
        need(1, "NAME --version N");
        const version = versionFlag(values.version, true);
        const secretId = await idOf(rest[0]!);
        const call = sub === "delete" ? client.deleteSecretVersion : sub === "undelete" ? client.undeleteSecretVersion : client.destroySecretVersion;
        const r = await call({ secretId, version });
        io.stdout.write(`${rest[0]} v${version}: ${STATE_NAMES[r.version!.state] ?? "unknown"}\n`);
        return EXIT.ok;
      }
      case "list": {
        if (rest.length > 1) throw new UsageError("list expects at most one PREFIX");
        const all = [];
        let pageToken = "";
        do {
          const page = await client.listSecrets({ namePrefix: rest[0] ?? "", pageToken, pageSize: 500 });
          all.push(...page.secrets);
          pageToken = page.nextPageToken;
        } while (pageToken !== "");
        if (values.json) {
          io.stdout.write(`${JSON.stringify(all.map((s) => ({ secretId: s.secretId, name: s.name, currentVersion: s.currentVersion, labels: s.labels })), null, 2)}\n`);
        } else for (const s of all) io.stdout.write(`${(s.name || "(unnamed)").padEnd(40)}  v${s.currentVersion}  ${s.secretId}\n`);
        return EXIT.ok;
      }
      case "grant":
      case "revoke": {
        need(2, "NAME PRINCIPAL");
        const secretId = await idOf(rest[0]!);
        if (sub === "grant") await client.grantSecretAccess({ secretId, principalId: rest[1]! });
        else await client.revokeSecretAccess({ secretId, principalId: rest[1]! });
        io.stdout.write(`${sub === "grant" ? "granted" : "revoked"} read access to ${rest[0]} for ${rest[1]}\n`);
        return EXIT.ok;
      }
      default:
        throw new UsageError(sub === undefined ? "name a subcommand" : `unknown subcommand "${sub}"`);
    }
  },
};
