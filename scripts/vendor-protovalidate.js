#!/usr/bin/env node
// Writes proto/buf/validate/validate.proto from the descriptor that the installed npm package
// @bufbuild/protovalidate ships. buf cannot fetch buf.build/bufbuild/protovalidate where the
// BSR is unreachable, and the package carries the compiled schema, not the .proto source, so
// the file is printed back from that descriptor: same messages, fields, numbers and rule
// options (upstream's doc comments are not part of a descriptor). `npm run check:gen` then
// proves gen/buf/validate matches the package byte for byte.
// Run after upgrading @bufbuild/protovalidate: node scripts/vendor-protovalidate.js
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { getExtension, hasExtension, isFieldSet } from "@bufbuild/protobuf";
import { FieldDescriptorProtoSchema, FieldDescriptorProto_Label as Label, FieldDescriptorProto_Type as Type } from "@bufbuild/protobuf/wkt";
import { file_buf_validate_validate, predefined, RuleSchema } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";

const OUT = "proto/buf/validate/validate.proto";
const { version } = JSON.parse(readFileSync("node_modules/@bufbuild/protovalidate/package.json", "utf8"));
const file = file_buf_validate_validate.proto;

const SCALARS = {
  [Type.DOUBLE]: "double", [Type.FLOAT]: "float", [Type.INT64]: "int64", [Type.UINT64]: "uint64",
  [Type.INT32]: "int32", [Type.FIXED64]: "fixed64", [Type.FIXED32]: "fixed32", [Type.BOOL]: "bool",
  [Type.STRING]: "string", [Type.BYTES]: "bytes", [Type.UINT32]: "uint32", [Type.SFIXED32]: "sfixed32",
  [Type.SFIXED64]: "sfixed64", [Type.SINT32]: "sint32", [Type.SINT64]: "sint64",
};
const LABELS = { [Label.OPTIONAL]: "optional", [Label.REPEATED]: "repeated", [Label.REQUIRED]: "required" };
const MAX_FIELD = 536870912; // exclusive end of an "N to max" range

/** A protobuf text-format string literal (UTF-8 kept, quotes, backslashes and controls escaped). */
const str = (s) =>
  `"${s.replace(/[\\"\x00-\x1f\x7f]/g, (c) => ({ "\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t" })[c] ?? `\\${c.charCodeAt(0).toString(8).padStart(3, "0")}`)}"`;

const typeOf = (f) => (f.type === Type.MESSAGE || f.type === Type.ENUM ? f.typeName : SCALARS[f.type]);

function fieldOptions(f) {
  const opts = f.options;
  if (!opts) return "";
  const known = Object.entries(opts).filter(([k, v]) => k !== "$typeName" && k !== "$unknown" && v !== undefined && !(Array.isArray(v) && v.length === 0));
  if (known.length > 0) throw new Error(`field ${f.name}: unsupported options ${known.map(([k]) => k).join(", ")}`);
  if (!hasExtension(opts, predefined)) {
    if (opts.$unknown?.length) throw new Error(`field ${f.name}: unsupported extension options`);
    return "";
  }
  const rules = getExtension(opts, predefined).cel.map((r) => {
    const parts = [];
    for (const name of ["id", "message", "expression"]) {
      if (isFieldSet(r, RuleSchema.field[name])) parts.push(`${name}: ${str(r[name])}`);
    }
    return `      {\n${parts.map((p) => `        ${p}`).join("\n")}\n      }`;
  });
  return ` [(buf.validate.predefined) = {\n    cel: [\n${rules.join(",\n")}\n    ]\n  }]`;
}

const field = (f, label) => `${label ? `${LABELS[f.label]} ` : ""}${typeOf(f)} ${f.name} = ${f.number}${fieldOptions(f)};`;

function ranges(rs, exclusiveEnd) {
  return rs.map((r) => {
    const end = exclusiveEnd ? r.end - 1 : r.end;
    if (exclusiveEnd && r.end === MAX_FIELD) return `${r.start} to max`;
    return end === r.start ? `${r.start}` : `${r.start} to ${end}`;
  }).join(", ");
}

function message(m) {
  if (m.nestedType.length || m.enumType.length || m.extension.length || m.options) throw new Error(`message ${m.name}: unsupported nested declarations or options`);
  const lines = [`message ${m.name} {`];
  let openOneof;
  for (const f of m.field) {
    const inOneof = isFieldSet(f, FieldDescriptorProtoSchema.field.oneofIndex) && !f.proto3Optional;
    if (openOneof !== undefined && (!inOneof || f.oneofIndex !== openOneof)) {
      lines.push("  }");
      openOneof = undefined;
    }
    if (inOneof && openOneof === undefined) {
      openOneof = f.oneofIndex;
      lines.push(`  oneof ${m.oneofDecl[f.oneofIndex].name} {`);
    }
    const text = field(f, !inOneof);
    lines.push(inOneof ? `    ${text.replaceAll("\n", "\n  ")}` : `  ${text}`);
  }
  if (openOneof !== undefined) lines.push("  }");
  if (m.extensionRange.length) lines.push(`  extensions ${ranges(m.extensionRange, true)};`);
  if (m.reservedRange.length) lines.push(`  reserved ${ranges(m.reservedRange, true)};`);
  if (m.reservedName.length) lines.push(`  reserved ${m.reservedName.map(str).join(", ")};`);
  lines.push("}");
  return lines.join("\n");
}

function enumType(e) {
  const lines = [`enum ${e.name} {`, ...e.value.map((v) => `  ${v.name} = ${v.number};`)];
  if (e.reservedRange.length) lines.push(`  reserved ${ranges(e.reservedRange, false)};`);
  if (e.reservedName.length) lines.push(`  reserved ${e.reservedName.map(str).join(", ")};`);
  lines.push("}");
  return lines.join("\n");
}

function extensions(exts) {
  const byExtendee = new Map();
  for (const x of exts) byExtendee.set(x.extendee, [...(byExtendee.get(x.extendee) ?? []), x]);
  return [...byExtendee].map(([extendee, xs]) => `extend ${extendee} {\n${xs.map((x) => `  ${field(x, true)}`).join("\n")}\n}`);
}

const o = file.options;
const out = [
  "// Copyright Buf Technologies, Inc. Licensed under the Apache License, Version 2.0",
  "// (http://www.apache.org/licenses/LICENSE-2.0).",
  "//",
  `// Vendored from the npm package @bufbuild/protovalidate ${version} by`,
  "// scripts/vendor-protovalidate.js, which prints it from the package's descriptor. Do not edit.",
  "",
  `syntax = "${file.syntax || "proto2"}";`,
  "",
  `package ${file.package};`,
  "",
  ...file.dependency.map((d) => `import ${str(d)};`),
  "",
  `option go_package = ${str(o.goPackage)};`,
  `option java_multiple_files = ${o.javaMultipleFiles};`,
  `option java_outer_classname = ${str(o.javaOuterClassname)};`,
  `option java_package = ${str(o.javaPackage)};`,
  "",
  ...[...extensions(file.extension), ...file.messageType.map(message), ...file.enumType.map(enumType)].flatMap((b) => [b, ""]),
];
mkdirSync(dirname(OUT), { recursive: true });
writeFileSync(OUT, out.join("\n"));
console.log(`wrote ${OUT} from @bufbuild/protovalidate ${version}`);
