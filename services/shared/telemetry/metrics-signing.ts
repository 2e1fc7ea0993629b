/**
 * The signing pipeline's domain metrics. Each is recorded where the fact is decided: commits
 * in Collection (the authority on what is stored, so sums across replicas are exact), leases
 * and jobs in the executor, fence checks where they fail. In Prometheus the dots become
 * underscores and counters gain `_total`: `keymesh_records_signed_total`,
 * `keymesh_batch_duration_bucket`, `keymesh_leases_held`.
 */
import { counter, gauge, histogram, upDownCounter } from "./metrics.js";

/** Latency buckets in milliseconds, from a quick local batch to a stalled one. */
const LATENCY_BUCKETS_MS = [5, 10, 25, 50, 75, 100, 150, 200, 300, 400, 500, 750, 1000, 1500, 2000, 3000, 5000, 7500, 10_000, 20_000, 60_000];

/** Records whose signatures were committed (Collection, on commit). */
export const recordsSigned = counter("keymesh.records.signed", "{record}", "Records whose signatures were committed");

/** Batches committed with at least one signature stored (Collection). */
export const batchesCommitted = counter("keymesh.batches.committed", "{batch}", "Signing batches committed");

/** Batches of which nothing was stored, by `reason` (`stale_fence`, `already_signed`, ...). */
export const batchesRefused = counter("keymesh.batches.refused", "{batch}", "Signing batches refused at commit, by reason");

/**
 * From the executor's lease to the commit, as Collection records it: the same measure as
 * the job summary's batch latency (GetBatchStats). `outcome`: committed or refused.
 */
export const batchDuration = histogram("keymesh.batch.duration", "ms", "Signing batch latency from lease to commit", LATENCY_BUCKETS_MS);

/** How long an executor worker waited for a key lease, busy retries included. */
export const leaseWait = histogram("keymesh.lease.wait", "ms", "Time an executor worker waited for a key lease", LATENCY_BUCKETS_MS);

/** Key leases an executor holds right now (keys busy). */
export const leasesHeld = upDownCounter("keymesh.leases.held", "{lease}", "Key leases held by executors");

/** Requests refused because their fencing token was no longer current, by `operation`. */
export const fenceRejections = counter("keymesh.fence.rejections", "{rejection}", "Operations refused for a stale fencing token");

/** Jobs an executor is running right now. */
export const jobsRunning = upDownCounter("keymesh.jobs.running", "{job}", "Signing jobs running on executors");

/** Share of a running job's records that are signed (0-1), by `job_id`. */
export const jobProgress = gauge("keymesh.job.progress", "1", "Share of a running job's records that are signed");

/**
 * Reports a zero for every series a service owns, at start: dashboards then show 0 (and
 * rates of 0) instead of "no data" until the first refusal or the first lease.
 */
export function reportSigningSeries(service: "collection" | "keys" | "executor"): void {
  if (service === "collection") {
    recordsSigned.add(0);
    batchesCommitted.add(0);
    for (const reason of ["already_signed", "stale_fence", "not_in_claim", "invalid_signature"]) batchesRefused.add(0, { reason });
    fenceRejections.add(0, { operation: "commit" });
  } else if (service === "keys") {
    for (const operation of ["renew", "key_fetch"]) fenceRejections.add(0, { operation });
  } else {
    leasesHeld.add(0);
    jobsRunning.add(0);
  }
}
