/**
 * A TracerProvider that gives each mesh service its own Resource, chosen per span.
 *
 * In the OpenTelemetry SDK the Resource, and with it `service.name`, belongs to the
 * TracerProvider; a span or a processor cannot change it. So there is one SDK provider per
 * service name, all feeding the same span processors (the exporter groups spans by resource,
 * one ResourceSpans per service). The provider registered globally is this router: its
 * tracers pick the provider of the service recorded in the span's parent context
 * (`service-name.ts`) at each `startSpan`. Library instrumentations (knex, ioredis) hold a
 * tracer from the global provider, so their spans land under the right service too.
 */
import { context, type Context, type Span, type SpanOptions, type Tracer, type TracerOptions, type TracerProvider } from "@opentelemetry/api";
import { resourceFromAttributes, type Resource } from "@opentelemetry/resources";
import { BasicTracerProvider, type SpanProcessor } from "@opentelemetry/sdk-trace-base";
import { ATTR_SERVICE_NAME } from "@opentelemetry/semantic-conventions";
import { serviceNameOf } from "./service-name.js";

/** Options of `createServiceTracerProvider`. */
export interface ServiceTracerProviderOptions {
  /** The process's resource; its service.name is used for spans outside any service. */
  readonly resource: Resource;
  /** Shared by every service's provider. */
  readonly spanProcessors: readonly SpanProcessor[];
  /**
   * Keep the resource's service.name for every span: set when the operator chose one
   * (OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES), which then wins.
   */
  readonly fixedServiceName?: boolean;
}

/** Creates the routing provider; register it with `trace.setGlobalTracerProvider`. */
export function createServiceTracerProvider(opts: ServiceTracerProviderOptions): TracerProvider {
  const providers = new Map<string, BasicTracerProvider>();
  const providerFor = (ctx: Context): BasicTracerProvider => {
    const name = opts.fixedServiceName ? undefined : serviceNameOf(ctx);
    const key = name ?? "";
    let provider = providers.get(key);
    if (provider === undefined) {
      const resource = name === undefined ? opts.resource : opts.resource.merge(resourceFromAttributes({ [ATTR_SERVICE_NAME]: name }));
      provider = new BasicTracerProvider({ resource, spanProcessors: [...opts.spanProcessors] });
      providers.set(key, provider);
    }
    return provider;
  };
  // Callers ask for a tracer per request (the interceptors do): hand out one per scope.
  const tracers = new Map<string, Tracer>();
  return {
    getTracer(name: string, version?: string, options?: TracerOptions): Tracer {
      const key = `${name}@${version ?? ""}:${options?.schemaUrl ?? ""}`;
      const known = tracers.get(key);
      if (known !== undefined) return known;
      // One SDK tracer per service provider, looked up per span without building a key.
      const perProvider = new Map<BasicTracerProvider, Tracer>();
      const tracerFor = (ctx: Context) => {
        const provider = providerFor(ctx);
        let t = perProvider.get(provider);
        if (t === undefined) {
          t = provider.getTracer(name, version, options);
          perProvider.set(provider, t);
        }
        return t;
      };
      const tracer: Tracer = {
        startSpan(spanName: string, spanOptions?: SpanOptions, ctx: Context = context.active()): Span {
          return tracerFor(ctx).startSpan(spanName, spanOptions, ctx);
        },
        // (name, fn) | (name, options, fn) | (name, options, context, fn): only the last
        // form names a context; the others start from the active one.
        startActiveSpan: ((...args: unknown[]) => {
          const ctx = args.length >= 4 ? (args[2] as Context) : context.active();
          const tracer = tracerFor(ctx);
          return (tracer.startActiveSpan as (...a: unknown[]) => unknown).apply(tracer, args);
        }) as Tracer["startActiveSpan"],
      };
      tracers.set(key, tracer);
      return tracer;
    },
  };
}
