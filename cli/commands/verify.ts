import { parseArgs } from "node:util";
import { CollectionService } from "../../gen/keymesh/collection/v1/collection_service_pb.js";
import { KeyManagementService } from "../../gen/keymesh/keys/v1/key_management_service_pb.js";
import { connectTo, meshUrl } from "../connect.js";
import { verifyAll } from "../verify-all.js";

/** `keymesh verify`: re-verify every stored signature against its key's public key. */
export const verifyUsage = `Usage: keymesh verify [--json] [--url URL]

Streams every record with its signature and verifies each one against the public key of the
key recorded with it. Exits 1 if any signature is invalid or any record is unsigned.
`;

/** Runs the command; returns the process exit code. */
export async function runVerify(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { json: { type: "boolean", default: false }, url: { type: "string" }, help: { type: "boolean", short: "h", default: false } },
  });
  if (values.help) {
    process.stdout.write(verifyUsage);
    return 0;
  }
  const client = connectTo(meshUrl(values.url));
  const started = Date.now();
  const report = await verifyAll({ collection: client(CollectionService), keys: client(KeyManagementService) });
  const ok = report.invalid === 0 && report.unsigned === 0;
  const out = { ok, ...report, wallMs: Date.now() - started };
  if (values.json) process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
  else {
    process.stdout.write(
      `${ok ? "ok" : "FAILED"}: ${report.valid} valid, ${report.invalid} invalid, ${report.unsigned} unsigned of ${report.records} records` +
        `${report.invalidSamples.length ? ` (e.g. records ${report.invalidSamples.join(", ")})` : ""}\n`,
    );
  }
  return ok ? 0 : 1;
}
