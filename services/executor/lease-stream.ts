import type { MessageInitShape } from "@bufbuild/protobuf";
import type { Client } from "@connectrpc/connect";
import type { Context } from "@opentelemetry/api";
import type {
  AcquireKeyLeaseRequestSchema,
  AcquireKeyLeaseResponse,
  KeyManagementService,
  LeaseStreamRequestSchema,
  LeaseStreamResponse,
  ReleaseKeyLeaseRequestSchema,
  ReleaseKeyLeaseResponse,
  RenewKeyLeaseRequestSchema,
  RenewKeyLeaseResponse,
  RotateKeyLeaseRequestSchema,
  RotateKeyLeaseResponse,
} from "../../gen/keymesh/keys/v1/key_management_service_pb.js";
import { createRequestStream } from "../shared/streams/request-stream.js";

/** The key service's lease calls as an executor's batches make them. */
export interface LeasePort {
  acquireKeyLease(req: MessageInitShape<typeof AcquireKeyLeaseRequestSchema>): Promise<AcquireKeyLeaseResponse>;
  rotateKeyLease(req: MessageInitShape<typeof RotateKeyLeaseRequestSchema>): Promise<RotateKeyLeaseResponse>;
  renewKeyLease(req: MessageInitShape<typeof RenewKeyLeaseRequestSchema>): Promise<RenewKeyLeaseResponse>;
  releaseKeyLease(req: MessageInitShape<typeof ReleaseKeyLeaseRequestSchema>): Promise<ReleaseKeyLeaseResponse>;
}

/**
 * The key service's LeaseStream shared by a job's batches (see request-stream.ts): an
 * acquisition, rotation, renewal or release is one message on it, in its batch's trace; the
 * stream itself is opened in `streamContext` (the job's).
 */
export function createLeaseStream(client: Client<typeof KeyManagementService>, streamContext?: Context): LeasePort & { close(): void } {
  const stream = createRequestStream<MessageInitShape<typeof LeaseStreamRequestSchema>["request"], LeaseStreamResponse["response"]>(
    "the lease stream",
    (requests) => client.leaseStream(requests),
    streamContext,
  );
  return {
    acquireKeyLease: async (req) => (await stream.call({ case: "acquire", value: req }, "acquire")).value,
    rotateKeyLease: async (req) => (await stream.call({ case: "rotate", value: req }, "rotate")).value,
    renewKeyLease: async (req) => (await stream.call({ case: "renew", value: req }, "renew")).value,
    releaseKeyLease: async (req) => (await stream.call({ case: "release", value: req }, "release")).value,
    close: () => stream.close(),
  };
}
