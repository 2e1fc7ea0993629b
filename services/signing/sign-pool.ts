import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import type { KeyObject } from "node:crypto";
import type { Logger } from "pino";
import { Code } from "@connectrpc/connect";
import { DomainError } from "../shared/errors.js";
import { SIGNATURE_BYTES } from "../shared/records/blocks.js";

/** Smallest chunk: below about 0.5 ms of signing, splitting a batch further gains nothing over the round trips. */
const MIN_CHUNK = 16;
/**
 * Chunks a thread holds at once: the next one waits in its port while it signs the current one,
 * so it does not idle until the main thread (busy with other services' work) hands it another.
 */
const THREAD_DEPTH = 2;
/** How long a thread that died before it came online waits to be restarted (its script or runtime is broken). */
const RESTART_BACKOFF_MS = 1_000;

/**
 * The signing service itself cannot sign right now (not a backend: UnavailableError would hide
 * the reason behind a generic message). Callers may retry the batch.
 */
const unavailable = (message: string) => new DomainError(Code.Unavailable, message);

/** A chunk on its way to a thread (see sign-worker.mjs). */
interface ChunkMessage {
  readonly id: number;
  readonly key: KeyObject;
  readonly payloads: ArrayBuffer;
  readonly lengths: Uint32Array;
}

/** A thread's answer for one chunk. */
type ChunkReply = { readonly id: number; readonly signatures: ArrayBuffer } | { readonly id: number; readonly error: string };

interface Batch {
  readonly key: KeyObject;
  readonly payloads: readonly Uint8Array[];
  readonly out: Buffer;
  left: number;
  failed: boolean;
  readonly resolve: (signatures: Buffer) => void;
  readonly reject: (err: Error) => void;
}

/** Payloads [first, end) of a batch; packed into a ChunkMessage only when handed to a thread. */
interface Chunk {
  readonly batch: Batch;
  readonly first: number;
  readonly end: number;
  /** The id of its latest ChunkMessage. */
  id: number;
}

interface Thread {
  readonly worker: Worker;
  online: boolean;
  exited: boolean;
  /** Chunks handed to it, oldest first (it answers in order). */
  readonly held: Chunk[];
}

/** Options of `createSignPool`. */
export interface SignPoolOptions {
  /** Signing threads (default: os.availableParallelism()). */
  readonly threads?: number;
  /** Smallest chunk a batch is split into (default MIN_CHUNK). */
  readonly minChunk?: number;
  /** Where a thread's crash is reported. */
  readonly logger?: Pick<Logger, "warn">;
}

/**
 * A pool of worker threads that sign Ed25519. `crypto.sign` is synchronous and about 36 µs a
 * signature; on the event loop a batch of 1000 would block it for 36 ms and keep signing on one
 * core, and one libuv job per signature costs the main thread about as much again in callbacks
 * and garbage. Here a batch is cut into about one chunk per thread; each chunk travels as one
 * transferred ArrayBuffer of payloads plus their lengths, with the KeyObject (cloned by
 * postMessage: the key stays inside this process and is never serialized to bytes), and comes
 * back as one transferred buffer of signatures. Chunks wait in one queue; a thread holds the one
 * it signs and the next, and takes another as it answers, so a thread slowed by a neighbour on
 * the machine takes fewer.
 *
 * A thread that dies fails the batch of the chunk it was signing (Unavailable, nothing of that
 * batch is returned) and is replaced; the chunk it held next goes back to the queue and the
 * other batches go on. Threads are unref'd while idle, so a pool never keeps a process alive,
 * and `close()` terminates them.
 */
export function createSignPool(opts: SignPoolOptions = {}) {
  const size = opts.threads ?? availableParallelism();
  const minChunk = opts.minChunk ?? MIN_CHUNK;
  const threads: Thread[] = [];
  const queue: Chunk[] = [];
  let nextId = 1;
  let closed = false;

  const fail = (batch: Batch, err: Error) => {
    if (batch.failed) return;
    batch.failed = true;
    batch.reject(err);
  };

  function start(slot: number): void {
    // execArgv: [] — the thread needs no loader or preload of the main thread (tsx, telemetry).
    const worker = new Worker(new URL("./sign-worker.mjs", import.meta.url), { execArgv: [], name: `keymesh-sign-${slot}` });
    const thread: Thread = { worker, online: false, exited: false, held: [] };
    threads[slot] = thread;
    worker.unref();
    worker.on("online", () => {
      thread.online = true;
    });
    worker.on("message", (reply: ChunkReply) => {
      const chunk = thread.held[0];
      if (!chunk || chunk.id !== reply.id) return;
      thread.held.shift();
      if (thread.held.length === 0) worker.unref();
      if ("error" in reply) fail(chunk.batch, new Error(`a signing thread could not sign: ${reply.error}`));
      else if (!chunk.batch.failed) {
        chunk.batch.out.set(new Uint8Array(reply.signatures), chunk.first * SIGNATURE_BYTES);
        if (--chunk.batch.left === 0) chunk.batch.resolve(chunk.batch.out);
      }
      pump();
    });
    worker.on("error", (err) => {
      opts.logger?.warn({ thread: slot, err: { name: err.name, message: err.message } }, "signing thread failed");
    });
    worker.on("exit", (code) => {
      thread.exited = true;
      if (threads[slot] !== thread) return;
      // The first chunk held is the one it was signing: that batch fails. Those waiting behind
      // it were not started and go back to the front of the queue, in order (packed anew: the
      // buffers sent went with the thread).
      const [lost, ...waiting] = thread.held.splice(0);
      if (closed) return;
      if (lost) fail(lost.batch, unavailable(`a signing thread stopped (exit code ${code}) while signing this batch; no signature of it was returned, sign it again`));
      queue.unshift(...waiting);
      if (thread.online) {
        opts.logger?.warn({ thread: slot, code }, "signing thread stopped; starting another");
        start(slot);
        pump();
        return;
      }
      // It never came online: the next one would not either, right now. Batches waiting for
      // a thread are refused rather than left hanging, and a new thread is tried a bit later.
      for (const chunk of queue.splice(0)) fail(chunk.batch, unavailable(`signing threads cannot start (exit code ${code}); try again later`));
      setTimeout(() => {
        if (!closed && threads[slot] === thread) start(slot);
      }, RESTART_BACKOFF_MS).unref();
    });
  }

  /** Hands queued chunks to threads: first one to each idle thread, then one more to each. */
  function pump(): void {
    for (let depth = 1; depth <= THREAD_DEPTH; depth++) {
      for (const thread of threads) {
        if (thread.held.length >= depth || thread.exited) continue;
        let chunk = queue.shift();
        while (chunk?.batch.failed) chunk = queue.shift();
        if (!chunk) return;
        thread.held.push(chunk);
        // Ref'd while it holds chunks, so a process waiting only for signatures stays alive.
        thread.worker.ref();
        const message = pack(chunk);
        thread.worker.postMessage(message, [message.payloads, message.lengths.buffer as ArrayBuffer]);
      }
    }
  }

  /** The chunk's payloads copied into one ArrayBuffer (to be transferred), with their lengths. */
  function pack(chunk: Chunk): ChunkMessage {
    const { payloads, key } = chunk.batch;
    let bytes = 0;
    for (let i = chunk.first; i < chunk.end; i++) bytes += payloads[i]!.length;
    const packed = new Uint8Array(bytes);
    const lengths = new Uint32Array(chunk.end - chunk.first);
    for (let i = chunk.first, at = 0; i < chunk.end; i++) {
      packed.set(payloads[i]!, at);
      at += lengths[i - chunk.first] = payloads[i]!.length;
    }
    chunk.id = nextId++;
    return { id: chunk.id, key, payloads: packed.buffer, lengths };
  }

  for (let slot = 0; slot < size; slot++) start(slot);

  return {
    /** Number of signing threads. */
    size,

    /**
     * Signs each payload with `key` (Ed25519) and returns the signatures concatenated, 64 bytes
     * each, in the order of `payloads`. The payloads are read (copied into the chunks sent) until
     * the promise settles, and never changed or transferred away from the caller.
     */
    sign(key: KeyObject, payloads: readonly Uint8Array[]): Promise<Buffer> {
      if (closed) return Promise.reject(unavailable("the signing service is shutting down"));
      if (payloads.length === 0) return Promise.resolve(Buffer.alloc(0));
      return new Promise<Buffer>((resolve, reject) => {
        const count = Math.min(size, Math.ceil(payloads.length / minChunk));
        const out = Buffer.allocUnsafeSlow(payloads.length * SIGNATURE_BYTES);
        const batch: Batch = { key, payloads, out, left: count, failed: false, resolve, reject };
        for (let c = 0, first = 0; c < count; c++) {
          // Balanced chunks: the first (length % count) get one payload more.
          const end = first + Math.floor(payloads.length / count) + (c < payloads.length % count ? 1 : 0);
          queue.push({ batch, first, end, id: 0 });
          first = end;
        }
        pump();
      });
    },

    /** The live threads (their `threadId` is -1 once stopped). */
    get workers(): readonly Worker[] {
      return threads.map((t) => t.worker);
    },

    /** Refuses what is still waiting or being signed, and stops every thread. */
    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      const refused = unavailable("the signing service is shutting down");
      for (const chunk of queue.splice(0)) fail(chunk.batch, refused);
      for (const thread of threads) for (const chunk of thread.held) fail(chunk.batch, refused);
      await Promise.all(threads.map((t) => t.worker.terminate()));
    },
  };
}

/** The signing pool. */
export type SignPool = ReturnType<typeof createSignPool>;
