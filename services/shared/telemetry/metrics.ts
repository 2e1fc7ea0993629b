/**
 * The one helper every domain metric goes through. A module declares its instruments once, at
 * import time, with `counter`, `histogram`, `upDownCounter` or `gauge`; recording is a plain
 * method call. Instruments bind lazily to the global MeterProvider on first use and rebind if
 * it changes, so a module imported before the metrics SDK starts (or in a test that installs
 * its own provider) still reports. Without an SDK every call lands on the API's no-op meter.
 *
 *   const batches = counter("keymesh.batches.committed", "{batch}", "Signing batches committed");
 *   batches.add(1);
 */
import { metrics, type Attributes, type Meter, type MeterProvider, type ObservableResult } from "@opentelemetry/api";

/** Instrumentation scope of every keymesh metric (the RPC interceptors use it too). */
export const meterName = "keymesh";

/** A monotonic count: records signed, batches committed. */
export interface CounterMetric {
  add(value: number, attributes?: Attributes): void;
}

/** A distribution: latencies, sizes. */
export interface HistogramMetric {
  record(value: number, attributes?: Attributes): void;
}

/** A count that goes up and down: leases held, jobs running. */
export interface UpDownCounterMetric {
  add(value: number, attributes?: Attributes): void;
}

/** The latest value per attribute set, reported at each collection: job progress. */
export interface GaugeMetric {
  set(value: number, attributes?: Attributes): void;
  /** Stops reporting the series (a finished job). */
  remove(attributes?: Attributes): void;
}

/** Every declared instrument's name, for the dashboard check and `keymesh top`. */
const declared = new Map<string, { kind: string; unit: string; description: string }>();

/** Name, kind and unit of every metric declared through this helper so far. */
export function declaredMetrics(): ReadonlyMap<string, { kind: string; unit: string; description: string }> {
  return declared;
}

function bound<T>(name: string, kind: string, unit: string, description: string, create: (meter: Meter) => T): () => T {
  if (declared.has(name)) throw new Error(`metric ${name} is declared twice`);
  declared.set(name, { kind, unit, description });
  let provider: MeterProvider | undefined;
  let instrument: T | undefined;
  return () => {
    const current = metrics.getMeterProvider();
    if (current !== provider || instrument === undefined) {
      provider = current;
      instrument = create(current.getMeter(meterName));
    }
    return instrument;
  };
}

/** Declares a counter; `unit` follows UCUM (`{record}`, `ms`, `By`). */
export function counter(name: string, unit: string, description: string): CounterMetric {
  const get = bound(name, "counter", unit, description, (m) => m.createCounter(name, { unit, description }));
  return { add: (value, attributes) => get().add(value, attributes) };
}

/** Declares a histogram; `buckets` are explicit upper bounds (the SDK's defaults otherwise). */
export function histogram(name: string, unit: string, description: string, buckets?: readonly number[]): HistogramMetric {
  const advice = buckets === undefined ? undefined : { explicitBucketBoundaries: [...buckets] };
  const get = bound(name, "histogram", unit, description, (m) =>
    m.createHistogram(name, { unit, description, ...(advice === undefined ? {} : { advice }) }),
  );
  return { record: (value, attributes) => get().record(value, attributes) };
}

/** Declares an up-down counter. */
export function upDownCounter(name: string, unit: string, description: string): UpDownCounterMetric {
  const get = bound(name, "updowncounter", unit, description, (m) => m.createUpDownCounter(name, { unit, description }));
  return { add: (value, attributes) => get().add(value, attributes) };
}

/**
 * Declares an observable gauge fed by `set`: the latest value of each attribute set is
 * reported at every collection until `remove`d, so finished series disappear instead of
 * staying at their last value forever.
 */
export function gauge(name: string, unit: string, description: string): GaugeMetric {
  const values = new Map<string, { value: number; attributes: Attributes }>();
  const observe = (result: ObservableResult) => {
    for (const { value, attributes } of values.values()) result.observe(value, attributes);
  };
  const get = bound(name, "gauge", unit, description, (m) => {
    const g = m.createObservableGauge(name, { unit, description });
    g.addCallback(observe);
    return g;
  });
  const keyOf = (attributes: Attributes) => JSON.stringify(Object.entries(attributes).sort(([a], [b]) => a.localeCompare(b)));
  return {
    set(value, attributes = {}) {
      get();
      values.set(keyOf(attributes), { value, attributes });
    },
    remove(attributes = {}) {
      values.delete(keyOf(attributes));
    },
  };
}
