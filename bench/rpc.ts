/**
 * `npm run bench:rpc`: what one call between keymesh processes costs, apart from its work.
 * Starts `keymesh serve signing` and measures, as JSON, the CPU time per call of the server
 * process (split into its main thread and its other threads: V8's garbage collector and
 * compilers, libuv) and of this client process, for:
 *
 * - `Verify`, a unary call whose work is one Ed25519 verification (about 50 µs), over gRPC and
 *   over the Connect protocol (both HTTP/2, binary), as a service calls another;
 * - one message on an open `SignStream` each way (a request whose lease token is refused, so
 *   the work is a token check), as the executor's batches use it.
 *
 * Calls run 4 at a time, each kind after a warm-up of its own; the two unary kinds are measured
 * alternately, twice each (`rounds`), since a process keeps getting faster as V8 optimizes more
 * of it: the first round is what a service sees in its first thousands of calls.
 *
 *   npm run bench:rpc
 *   npm run bench:rpc -- --calls 10000
 */
import { generateKeyPairSync, randomBytes, sign } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { createWritableIterable } from "@connectrpc/connect/protocol";
import { SigningService, type SignStreamRequestSchema } from "../gen/keymesh/signing/v1/signing_service_pb.js";
import { ensureRootToken } from "../services/shared/root-token.js";
import { bearer, freePort, startServe, type MeshProcess } from "./mesh-processes.js";

const { values } = parseArgs({ options: { calls: { type: "string", default: "3000" } } });
const CALLS = Number(values.calls);
const IN_FLIGHT = 4;
const WARM_UP = 2000;

/** CPU time (ms) of each thread of a process, by thread id, from /proc. */
function threadCpuMs(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    const fields = readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8").split(") ")[1]!.split(" ");
    out.set(tid, (Number(fields[11]) + Number(fields[12])) * 10);
  }
  return out;
}

/** Runs `calls` calls of `one` (IN_FLIGHT at a time) and returns the CPU time per call on both ends. */
async function measure(server: MeshProcess, calls: number, one: () => Promise<unknown>) {
  for (let i = 0; i < WARM_UP; i += IN_FLIGHT) await Promise.all(Array.from({ length: IN_FLIGHT }, one));
  const threadsBefore = threadCpuMs(server.pid);
  const client = process.cpuUsage();
  for (let i = 0; i < calls; i += IN_FLIGHT) await Promise.all(Array.from({ length: IN_FLIGHT }, one));
  const clientUsed = process.cpuUsage(client);
  const threadsAfter = threadCpuMs(server.pid);
  // The main thread's id is the process id.
  const main = threadsAfter.get(String(server.pid))! - threadsBefore.get(String(server.pid))!;
  let all = 0;
  for (const [tid, ms] of threadsAfter) all += ms - (threadsBefore.get(tid) ?? 0);
  const per = (ms: number) => Number((ms / calls).toFixed(3));
  return {
    serverMsPerCall: per(all),
    serverMainThreadMsPerCall: per(main),
    serverOtherThreadsMsPerCall: per(all - main),
    clientMsPerCall: per((clientUsed.user + clientUsed.system) / 1000),
  };
}

async function main() {
  const dataDir = mkdtempSync(join(tmpdir(), "keymesh-bench-rpc-"));
  const serviceToken = randomBytes(24).toString("base64url");
  const env = { PATH: process.env.PATH, HOME: process.env.HOME, KEYMESH_DATA_DIR: dataDir, KEYMESH_SERVICE_TOKEN: serviceToken };
  const rootToken = ensureRootToken(dataDir).token;
  const server = await startServe(["signing"], await freePort(), env);
  try {
    const { privateKey, publicKey } = generateKeyPairSync("ed25519");
    const payload = Buffer.alloc(100, 1);
    const verify = {
      key: { case: "publicKey" as const, value: publicKey.export({ format: "der", type: "spki" }).subarray(-32) },
      payload,
      signature: sign(null, payload, privateKey),
    };
    const grpc = createClient(SigningService, createGrpcTransport({ baseUrl: server.url, interceptors: [bearer(rootToken)] }));
    const connect = createClient(SigningService, createConnectTransport({ baseUrl: server.url, httpVersion: "2", useBinaryFormat: true, interceptors: [bearer(rootToken)] }));
    // Alternated, twice each: a process keeps getting faster as V8 optimizes more of it.
    const unaryGrpc = [], unaryConnect = [];
    for (let round = 0; round < 2; round++) {
      unaryConnect.push(await measure(server, CALLS, () => connect.verify(verify)));
      unaryGrpc.push(await measure(server, CALLS, () => grpc.verify(verify)));
    }

    // SignStream is for keymesh services: the client presents the service token.
    const service: Client<typeof SigningService> = createClient(SigningService, createGrpcTransport({ baseUrl: server.url, interceptors: [bearer(serviceToken)] }));
    const requests = createWritableIterable<MessageInitShape<typeof SignStreamRequestSchema>>();
    const replies = service.signStream(requests)[Symbol.asyncIterator]();
    let n = 0;
    const streamMessage = async () => {
      const batchId = `b${n++}`;
      const batch = { batchId, keyId: "k1", fence: 1n, leaseId: "lease", leaseToken: "refused", records: { ids: [1n], payloadLengths: [1], payloads: new Uint8Array([1]) } };
      void requests.write({ batch });
      const reply = await replies.next();
      if (reply.done === true || reply.value.result.case !== "error") throw new Error(`SignStream answered ${JSON.stringify(reply.value?.result.case)} to a refused lease token`);
    };
    const streamed = await measure(server, CALLS, streamMessage);
    requests.close();

    process.stdout.write(
      `${JSON.stringify(
        {
          calls: CALLS,
          inFlight: IN_FLIGHT,
          unaryVerifyGrpc: { rounds: unaryGrpc },
          unaryVerifyConnect: { rounds: unaryConnect },
          signStreamMessage: streamed,
        },
        null,
        2,
      )}\n`,
    );
  } finally {
    await server.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

await main();
