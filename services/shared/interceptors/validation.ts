import { create, type DescMessage, type DescMethod, type MessageShape } from "@bufbuild/protobuf";
import { createValidator, type ValidatorOptions } from "@bufbuild/protovalidate";
import { RE2JS } from "@bufbuild/re2";
import { Code, ConnectError, type ConnectRouter, type Interceptor } from "@connectrpc/connect";
import { createValidateInterceptor } from "@connectrpc/validate";

/**
 * Request validation declared in the protos. The rules live on the request messages' fields
 * as `(buf.validate.field)` options (protovalidate); the interceptor checks each request
 * message (each message of a stream) before the handler runs and answers InvalidArgument
 * naming the field and the rule, e.g.
 * `count: must be greater than or equal to 1 and less than or equal to 10000000 [uint32.gte_lte]`.
 * Handlers keep only the checks a rule cannot express.
 */

/**
 * A pattern the platform RegExp matches exactly as RE2 does, in linear time: one anchored
 * character class of letters, digits, `_`, `.`, `/` and `-` (ranges allowed), with a length
 * bound, like `^[A-Za-z0-9_-]{1,64}$`. Every `pattern` rule in the protos has this shape.
 */
const PLAIN_CLASS_PATTERN = /^\^\[[A-Za-z0-9_./-]+\]\{\d+(,\d+)?\}\$$/;

/** Compiled patterns; the protos hold a handful, the bound only guards against a rule built from input. */
const patterns = new Map<string, (against: string) => boolean>();
const PATTERN_CACHE_LIMIT = 1024;

/**
 * The regex engine of the `pattern` rules: the platform RegExp for PLAIN_CLASS_PATTERN's
 * shape, RE2 (protovalidate's default engine, with its syntax and linear-time guarantee) for
 * any other. RE2 in JavaScript cost the signing path's services 60–80 ms of CPU each over a
 * profiled split bench run (two 100k-record jobs; docs/performance.md, seventh round), for the
 * one key-id pattern every batch's messages carry; RegExp matches it natively.
 */
export function matchPattern(pattern: string, against: string): boolean {
  let test = patterns.get(pattern);
  if (test === undefined) {
    if (patterns.size >= PATTERN_CACHE_LIMIT) patterns.clear();
    if (PLAIN_CLASS_PATTERN.test(pattern)) {
      const re = new RegExp(pattern);
      test = (s) => re.test(s);
    } else {
      const re = RE2JS.compile(pattern);
      test = (s) => re.test(s);
    }
    patterns.set(pattern, test);
  }
  return test(against);
}

/** The options every validator of this code base is made with (the interceptor's, the bench's). */
export const VALIDATOR_OPTIONS: ValidatorOptions = { regexMatch: matchPattern };

/** One validator for the process: it compiles each message type's rules once and caches them. */
const validator = createValidator(VALIDATOR_OPTIONS);

/** Options of `createValidationInterceptor`. */
export interface ValidationOptions {
  /**
   * Which methods to check; default all. The host checks implemented methods only, so that
   * an RPC not built yet answers Unimplemented whatever its request.
   */
  readonly validates?: (method: DescMethod) => boolean;
}

/** The server interceptor that enforces the protos' validation rules. */
export function createValidationInterceptor(opts: ValidationOptions = {}): Interceptor {
  const validate = createValidateInterceptor({ validator });
  return (next) => {
    const validated = validate(next);
    return (req) => (opts.validates?.(req.method) ?? true ? validated(req) : next(req));
  };
}

/**
 * A router that notes in `implemented` each method its services implement (connect-es
 * answers the others Unimplemented), for `ValidationOptions.validates`.
 */
export function recordImplemented(router: ConnectRouter, implemented: Set<DescMethod>): ConnectRouter {
  const recording: ConnectRouter = {
    handlers: router.handlers,
    service(desc, impl, options) {
      for (const method of desc.methods) {
        if (typeof (impl as Record<string, unknown>)[method.localName] === "function") implemented.add(method);
      }
      router.service(desc, impl, options);
      return recording;
    },
    rpc(method, impl, options) {
      implemented.add(method);
      router.rpc(method, impl, options);
      return recording;
    },
  };
  return recording;
}

/**
 * The InvalidArgument error for a message that breaks its rules, undefined for one that keeps
 * them. For messages the interceptor does not check one by one: a batch inside a stream
 * message whose field is marked `ignore = IGNORE_ALWAYS`, checked by the handler so that it
 * fails alone.
 */
export function violationOf<Desc extends DescMessage>(schema: Desc, message: MessageShape<Desc>): ConnectError | undefined {
  const result = validator.validate(schema, message);
  if (result.kind === "valid") return undefined;
  return new ConnectError(result.error.message, Code.InvalidArgument, undefined, undefined, result.error);
}

/** Throws `violationOf`'s error for a message that breaks its rules. */
export function assertValid<Desc extends DescMessage>(schema: Desc, message: MessageShape<Desc>): void {
  const invalid = violationOf(schema, message);
  if (invalid) throw invalid;
}

/**
 * Compiles the rules of the given request types, and of every message type inside them, ahead
 * of their first call. protovalidate compiles a message type's CEL rules when it first
 * validates one (CommitBatchRequest: about 60 ms), so without this the first call of each
 * method pays for it. One type per macrotask: the event loop keeps serving meanwhile.
 */
export async function warmValidation(requests: Iterable<DescMessage>, signal?: AbortSignal): Promise<void> {
  const seen = new Set<string>();
  const pending = [...requests];
  while (pending.length > 0 && !signal?.aborted) {
    const schema = pending.pop()!;
    if (seen.has(schema.typeName)) continue;
    seen.add(schema.typeName);
    for (const field of schema.fields) if (field.message !== undefined) pending.push(field.message);
    await new Promise((resolve) => setImmediate(resolve));
    // An empty message breaks rules (that is fine): what matters is that its plan is compiled.
    validator.validate(schema, create(schema));
  }
}
