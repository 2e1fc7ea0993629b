#!/usr/bin/env bash
# Generates Python message and gRPC stubs from the contracts in proto/ into
# examples/python/gen/ (git-ignored; regenerated on every run).
#
# Needs Debian's protoc and gRPC Python plugin:
#   apt-get install -y python3-grpcio protobuf-compiler protobuf-compiler-grpc
#
# Layout of the output:
#   gen/keymesh/<svc>/v1/*_pb2.py, *_pb2_grpc.py   from proto/keymesh/**   (import keymesh.<svc>.v1...)
#   gen/buf/validate/validate_pb2.py               from proto/buf/validate/validate.proto (the
#                                                  validation rules the keymesh protos import)
#   gen/grpc_health/v1/health_pb2.py, ..._grpc.py  from proto/grpc/health/v1/health.proto
#
# The vendored health contract lives at grpc/health/v1/ in proto/, but a Python package
# named `grpc` would be shadowed by grpcio's own `grpc` package, so it is compiled from a
# staging copy at grpc_health/v1/ instead: the same module path the official
# grpcio-health-checking package uses. The wire names (grpc.health.v1.Health) come from the
# proto's `package` line and are unchanged.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
proto="$root/proto"
out="$here/gen"

fail() { echo "generate.sh: $*" >&2; exit 1; }

command -v protoc >/dev/null 2>&1 \
  || fail "protoc not found; install it with: apt-get install -y protobuf-compiler"
plugin="$(command -v grpc_python_plugin || true)"
[[ -n "$plugin" ]] \
  || fail "grpc_python_plugin not found; install it with: apt-get install -y protobuf-compiler-grpc"

rm -rf "$out"
mkdir -p "$out"
staging="$(mktemp -d)"
trap 'rm -rf "$staging"' EXIT

# keymesh contracts, with their import paths (keymesh/<svc>/v1/...) as Python packages, and
# the vendored protovalidate contract they import (buf/validate/validate.proto).
mapfile -t keymesh_protos < <(cd "$proto" && find keymesh buf -name '*.proto' | sort)
[[ ${#keymesh_protos[@]} -gt 0 ]] || fail "no .proto files under $proto/keymesh"
protoc -I "$proto" \
  --python_out="$out" \
  --grpc_python_out="$out" \
  --plugin=protoc-gen-grpc_python="$plugin" \
  "${keymesh_protos[@]/#/$proto/}"

# gRPC health checking, as grpc_health.v1.
mkdir -p "$staging/grpc_health/v1"
cp "$proto/grpc/health/v1/health.proto" "$staging/grpc_health/v1/health.proto"
protoc -I "$staging" \
  --python_out="$out" \
  --grpc_python_out="$out" \
  --plugin=protoc-gen-grpc_python="$plugin" \
  "$staging/grpc_health/v1/health.proto"

# Make every generated directory a regular Python package.
find "$out" -type d -exec touch {}/__init__.py \;
rm -f "$out/__init__.py"

echo "generated $(find "$out" -name '*_pb2*.py' | wc -l) modules into ${out#"$root"/}"
