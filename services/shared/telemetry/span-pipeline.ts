/**
 * The span processors every traced process runs, in order, ahead of its exporter.
 */
import type { SpanProcessor } from "@opentelemetry/sdk-trace-base";
import { createSqlSpanProcessor } from "./sql-spans.js";

/** The processors of the tracer provider: SQL spans renamed, then `exportProcessor`. */
export function createSpanPipeline(exportProcessor: SpanProcessor): SpanProcessor[] {
  return [createSqlSpanProcessor(), exportProcessor];
}
