import { describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import { GetBatchStatsResponseSchema } from "../gen/keymesh/collection/v1/collection_service_pb.js";
import { JobProgressSchema, JobState } from "../gen/keymesh/executor/v1/executor_service_pb.js";
import { formatSummary, signSummary } from "./sign-summary.js";

const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
const last = create(JobProgressSchema, { jobId: "job-1", state: JobState.SUCCEEDED, traceId, batchSize: 100 });
const stats = create(GetBatchStatsResponseSchema, {});

describe("keymesh sign's trace hint", () => {
  it("names the job's trace and where its batch traces are: service, operation and job tag, with a Jaeger search link", () => {
    const summary = signSummary(last, stats, undefined, 1000, "http://localhost:16686/");
    expect(summary.traceUrl).toBe(`http://localhost:16686/trace/${traceId}`);
    const search = new URL(summary.batchesUrl!);
    expect(search.origin + search.pathname).toBe("http://localhost:16686/search");
    expect(Object.fromEntries(search.searchParams)).toEqual({
      service: "keymesh-executor",
      operation: "signing.batch",
      tags: JSON.stringify({ "keymesh.job_id": "job-1" }),
      limit: "1500",
    });
    const text = formatSummary(summary);
    expect(text).toContain(traceId);
    expect(text).toMatch(/search service keymesh-executor[\s\S]*operation signing\.batch,\s+tags keymesh\.job_id=job-1/);
    expect(text).toContain(summary.batchesUrl!);
  });

  it("still tells how to find the batches without a Jaeger UI, and says when tracing is off", () => {
    const text = formatSummary(signSummary(last, stats, undefined, 1000, undefined));
    expect(text).toContain("tags keymesh.job_id=job-1");
    expect(text).not.toContain("/search?");
    const off = formatSummary(signSummary({ ...last, traceId: "" }, stats, undefined, 1000, "http://localhost:16686"));
    expect(off).toContain("tracing is off");
    expect(off).not.toContain("/search?");
  });
});
