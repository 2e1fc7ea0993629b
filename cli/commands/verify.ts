import { parseArgs } from "node:util";
import { CollectionService } from "../../gen/keymesh/collection/v1/collection_service_pb.js";
import { KeyManagementService } from "../../gen/keymesh/keys/v1/key_management_service_pb.js";
import { EXIT, type Command, type CommandIO } from "../command.js";
import { CLIENT_OPTIONS, CLIENT_USAGE, connectFromFlags } from "../connect.js";
import { verifyAll } from "../verify-all.js";

const USAGE = `Usage: keymesh verify [options]

Streams every record with its signature and verifies each one against the public key of the
key recorded with it. Exits 1 if any signature is invalid or any record is unsigned.

Options:
  --json             print the summary as JSON
${CLIENT_USAGE}
`;

/** `keymesh verify`: re-verify every stored signature against its key's public key. */
export const verifyCommand: Command = {
  name: "verify",
  summary: "re-verify every stored signature against its key's public key",
  usage: USAGE,
  run: runVerify,
};

async function runVerify(argv: string[], io: CommandIO): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { json: { type: "boolean", default: false }, ...CLIENT_OPTIONS } });
  const { client } = connectFromFlags(values, io.env);
  const started = Date.now();
  const report = await verifyAll({ collection: client(CollectionService), keys: client(KeyManagementService) });
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
