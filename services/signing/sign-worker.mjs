// One signing thread of sign-pool.ts. Plain JavaScript on purpose: it runs in a worker thread,
// which does not get the tsx loader the main thread registered, and it needs nothing but
// node:crypto. The protocol (types in sign-pool.ts):
//   in:  { id, key: KeyObject, payloads: ArrayBuffer, lengths: Uint32Array }  (buffers transferred)
//   out: { id, signatures: ArrayBuffer }  (transferred; 64 bytes per payload, in order)
//     or { id, error: string }  when crypto.sign refused (never carries key material).
import { sign } from "node:crypto";
import { parentPort } from "node:worker_threads";

const SIGNATURE_BYTES = 64;

parentPort.on("message", ({ id, key, payloads, lengths }) => {
  try {
    // Its own ArrayBuffer (not a pooled Buffer), so it can be transferred back.
    const out = new Uint8Array(lengths.length * SIGNATURE_BYTES);
    let at = 0;
    for (let i = 0; i < lengths.length; i++) {
      out.set(sign(null, new Uint8Array(payloads, at, lengths[i]), key), i * SIGNATURE_BYTES);
      at += lengths[i];
    }
    parentPort.postMessage({ id, signatures: out.buffer }, [out.buffer]);
  } catch (err) {
    parentPort.postMessage({ id, error: err instanceof Error ? err.message : String(err) });
  }
});
