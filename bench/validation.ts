/**
 * `npm run bench:validation`: what checking the protos' request rules costs on the signing
 * path's largest messages (the host validates every request before its handler runs). Prints
 * the median CPU time to validate one CommitBatch and one SignBatch of each size, as JSON.
 *
 *   npm run bench:validation
 *   npm run bench:validation -- --rounds 50
 */
import { packRecords } from "../services/shared/records/blocks.js";
import { randomBytes } from "node:crypto";
import { parseArgs } from "node:util";
import { create, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { createValidator } from "@bufbuild/protovalidate";
import { CommitBatchRequestSchema } from "../gen/keymesh/collection/v1/collection_service_pb.js";
import { SignBatchRequestSchema } from "../gen/keymesh/signing/v1/signing_service_pb.js";
import { VALIDATOR_OPTIONS } from "../services/shared/interceptors/validation.js";

const { values } = parseArgs({ options: { rounds: { type: "string", default: "30" } } });
const ROUNDS = Number(values.rounds);
const validator = createValidator(VALIDATOR_OPTIONS);

function medianMs<D extends DescMessage>(schema: D, message: MessageShape<D>): number {
  if (validator.validate(schema, message).kind !== "valid") throw new Error(`${schema.typeName} is not valid`);
  const times: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    const start = process.cpuUsage();
    validator.validate(schema, message);
    const used = process.cpuUsage(start);
    times.push((used.user + used.system) / 1000);
  }
  times.sort((a, b) => a - b);
  return Math.round(times[Math.floor(times.length / 2)]! * 100) / 100;
}

const results = [100, 1000, 10_000].map((size) => {
  const commit = create(CommitBatchRequestSchema, {
    claimId: "c-1", batchId: "b-1", keyId: "k-1", fence: 7n, jobId: "job-1", leaseId: "l".repeat(43), leaseToken: "t".repeat(160),
    signatures: { recordIds: Array.from({ length: size }, (_, i) => BigInt(i + 1)), signatures: randomBytes(64 * size) },
  });
  const sign = create(SignBatchRequestSchema, {
    batchId: "b-1", keyId: "k-1", fence: 7n, leaseId: "l".repeat(43), leaseToken: "t".repeat(160),
    records: packRecords(Array.from({ length: size }, (_, i) => ({ id: i + 1, payload: randomBytes(64) }))),
  });
  const commitMs = medianMs(CommitBatchRequestSchema, commit);
  const signMs = medianMs(SignBatchRequestSchema, sign);
  return { batchSize: size, commitBatchMs: commitMs, signBatchMs: signMs, perRecordUs: Math.round(((commitMs + signMs) * 1000) / size * 100) / 100 };
});
console.log(JSON.stringify({ rounds: ROUNDS, cpuMsPerMessage: results }, null, 2));
