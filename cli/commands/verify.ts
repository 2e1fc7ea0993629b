import { CollectionService } from "../../gen/keymesh/collection/v1/collection_service_pb.js";
import { KeyManagementService } from "../../gen/keymesh/keys/v1/key_management_service_pb.js";
import { EXIT, type Command, type CommandIO } from "../command.js";
import { CLIENT_OPTIONS, CLIENT_USAGE, connectTo, meshUrl } from "../connect.js";
import { resolveToken } from "../credentials.js";
import { CliError, describeFailure } from "../failure.js";
import { parseFlags } from "../flags.js";
import { verifyAll } from "../verify-all.js";

const USAGE = `Usage: keymesh verify [--json] [--url URL] [--token TOKEN]

Streams every record with its signature and verifies each one against the public key of the
key recorded with it. Exits 1 if any signature is invalid or any record is unsigned.

Options:
  --json       print the report as JSON
${CLIENT_USAGE}
  -h, --help   show this help`;

/** `keymesh verify`: re-verify every stored signature against its key's public key. */
export const verifyCommand: Command = {
  name: "verify",
  summary: "re-verify every stored signature against its key's public key",
  usage: USAGE,
  run: runVerify,
};

async function runVerify(argv: string[], io: CommandIO): Promise<number> {
  const { values } = parseFlags(argv, { json: { type: "boolean", default: false }, ...CLIENT_OPTIONS });
  const url = meshUrl(values.url, io.env);
  const client = connectTo(url, resolveToken(values.token, io.env, url), io.env);
  const started = Date.now();
  const report = await verifyAll({ collection: client(CollectionService), keys: client(KeyManagementService) }).catch((err: unknown) => {
    throw new CliError(describeFailure(err, { command: "verify", url }));
  });
  const ok = report.invalid === 0 && report.unsigned === 0;
  const out = { ok, ...report, wallMs: Date.now() - started };
  if (values.json) io.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
  else {
    io.stdout.write(
      `${ok ? "ok" : "FAILED"}: ${report.valid} valid, ${report.invalid} invalid, ${report.unsigned} unsigned of ${report.records} records` +
        `${report.invalidSamples.length ? ` (e.g. records ${report.invalidSamples.join(", ")})` : ""}\n`,
    );
  }
  return ok ? EXIT.ok : EXIT.failure;
}
