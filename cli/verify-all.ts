import type { Client } from "@connectrpc/connect";
import type { CollectionService } from "../gen/keymesh/collection/v1/collection_service_pb.js";
import type { KeyManagementService } from "../gen/keymesh/keys/v1/key_management_service_pb.js";
import { ed25519PublicKey, verifyEd25519Async } from "../services/shared/crypto/ed25519.js";
import type { KeyObject } from "node:crypto";

/** The outcome of re-verifying every stored signature. */
export interface VerifyReport {
  records: number;
  signed: number;
  valid: number;
  invalid: number;
  unsigned: number;
  /** Up to 10 record ids that failed, for a person to look at. */
  invalidSamples: string[];
}

/**
 * Streams every record with its signature from Collection (or, with `jobId`, the records whose
 * signatures that job's batches stored: what `keymesh sign` answers for, read batch by batch
 * however many records the table holds) and verifies each signature locally against its key's
 * public key (fetched once per key from KeyManagement). A page's signatures are verified on
 * libuv's thread pool, so every core works on them (Ed25519 verification is about 0.1 ms a
 * signature: a million is 100 s on one core).
 */
export async function verifyAll(
  clients: { collection: Client<typeof CollectionService>; keys: Client<typeof KeyManagementService> },
  onProgress?: (done: number) => void,
  signal?: AbortSignal,
  jobId?: string,
): Promise<VerifyReport> {
  const call = signal === undefined ? {} : { signal };
  const keys = new Map<string, KeyObject>();
  let token = "";
  do {
    const page = await clients.keys.listKeyringKeys({ pageSize: 10_000, pageToken: token }, call);
    for (const k of page.keys) keys.set(k.keyId, ed25519PublicKey(k.publicKey));
    token = page.nextPageToken;
  } while (token);

  const report: VerifyReport = { records: 0, signed: 0, valid: 0, invalid: 0, unsigned: 0, invalidSamples: [] };
  for await (const chunk of clients.collection.exportSignatures(jobId ? { jobId } : {}, call)) {
    const checks: Promise<void>[] = [];
    for (const { record, signature } of chunk.records) {
      report.records++;
      if (!signature) {
        report.unsigned++;
        continue;
      }
      report.signed++;
      const key = keys.get(signature.keyId);
      const valid = key && record ? verifyEd25519Async(key, record.payload, signature.signature) : Promise.resolve(false);
      checks.push(
        valid.then((ok) => {
          if (ok) report.valid++;
          else {
            report.invalid++;
            if (report.invalidSamples.length < 10) report.invalidSamples.push(String(record?.id));
          }
        }),
      );
    }
    await Promise.all(checks);
    onProgress?.(report.records);
  }
  return report;
}
