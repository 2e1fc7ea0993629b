#!/usr/bin/python3
"""A small keymesh client in Python, built on stubs generated from proto/.

It talks plain gRPC (HTTP/2, binary protobuf, no TLS) to a running keymesh server:

  1. grpc.health.v1.Health/Check for the whole server ("") and for CollectionService;
  2. CollectionService.SeedRecords(count=N), then CollectionService.GetProgress;
  3. KeyManagementService.CreateKeyringKeys(count=2), then ListKeyringKeys;

and prints one JSON summary to stdout. Every call's entry carries "code", the gRPC status
code name ("OK", "UNIMPLEMENTED", ...); failed calls also carry "details".

Usage:
  examples/python/generate.sh                      # once, to create examples/python/gen/
  /usr/bin/python3 examples/python/keymesh_client.py 127.0.0.1:8080 [--count N]

Exit status: 0 when every call returned OK, 3 when at least one returned another status
(the summary is printed all the same), 1 when the server could not be reached, 2 on bad
usage or missing stubs/libraries.
"""

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
GEN = os.path.join(HERE, "gen")


def die(message):
    sys.stderr.write("keymesh_client.py: %s\n" % message)
    sys.exit(2)


try:
    import grpc
except ImportError:
    die("the grpc module is missing. Install Debian's package (apt-get install -y "
        "python3-grpcio) and run this script with Debian's interpreter, /usr/bin/python3 "
        "(a pyenv or venv python does not see it).")

if not os.path.isdir(os.path.join(GEN, "keymesh")):
    die("generated stubs not found in %s; run examples/python/generate.sh" % GEN)

# The generated modules import each other as keymesh.<svc>.v1.<file>_pb2, so gen/ must be
# on the module search path.
sys.path.insert(0, GEN)

from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402
from keymesh.collection.v1 import collection_service_pb2 as collection_pb2  # noqa: E402
from keymesh.collection.v1 import collection_service_pb2_grpc as collection_grpc  # noqa: E402
from keymesh.keys.v1 import key_management_service_pb2 as keys_pb2  # noqa: E402
from keymesh.keys.v1 import key_management_service_pb2_grpc as keys_grpc  # noqa: E402

# The fully-qualified service name, as the server registers it for health checks.
COLLECTION_SERVICE = collection_pb2.DESCRIPTOR.services_by_name["CollectionService"].full_name


def call(rpc, request, timeout, describe):
    """Runs one unary call; returns {"code": ..., **describe(response)} or the error."""
    try:
        response = rpc(request, timeout=timeout)
    except grpc.RpcError as err:
        return {"code": err.code().name, "details": err.details() or ""}
    result = {"code": grpc.StatusCode.OK.name}
    result.update(describe(response))
    return result


def describe_keyring_key(key):
    return {
        "keyId": key.key_id,
        "publicKeyHex": key.public_key.hex(),
        "fence": key.fence,
        "masterKeyVersion": key.master_key_version,
    }


def run(target, count, timeout):
    summary = {"target": target}
    with grpc.insecure_channel(target) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            summary["error"] = "could not connect within %ss" % timeout
            return summary, 1

        health = health_pb2_grpc.HealthStub(channel)
        collection = collection_grpc.CollectionServiceStub(channel)
        keys = keys_grpc.KeyManagementServiceStub(channel)

        summary["health"] = {
            service: call(
                health.Check,
                health_pb2.HealthCheckRequest(service=service),
                timeout,
                lambda r: {"status": health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)},
            )
            for service in ("", COLLECTION_SERVICE)
        }

        summary["seedRecords"] = call(
            collection.SeedRecords,
            collection_pb2.SeedRecordsRequest(count=count),
            timeout,
            lambda r: {"inserted": r.inserted, "total": r.total},
        )
        summary["getProgress"] = call(
            collection.GetProgress,
            collection_pb2.GetProgressRequest(),
            timeout,
            lambda r: {"total": r.total, "signed": r.signed, "claimed": r.claimed},
        )

        summary["createKeyringKeys"] = call(
            keys.CreateKeyringKeys,
            keys_pb2.CreateKeyringKeysRequest(count=2),
            timeout,
            lambda r: {"keys": [describe_keyring_key(k) for k in r.keys]},
        )
        summary["listKeyringKeys"] = call(
            keys.ListKeyringKeys,
            keys_pb2.ListKeyringKeysRequest(),
            timeout,
            lambda r: {
                "keys": [describe_keyring_key(k) for k in r.keys],
                "nextPageToken": r.next_page_token,
            },
        )

    codes = [summary["health"][s]["code"] for s in summary["health"]]
    codes += [summary[name]["code"] for name in
              ("seedRecords", "getProgress", "createKeyringKeys", "listKeyringKeys")]
    return summary, 0 if all(code == "OK" for code in codes) else 3


def main():
    parser = argparse.ArgumentParser(description="Exercise a keymesh server over gRPC.")
    parser.add_argument("target", help="server address, host:port (e.g. 127.0.0.1:8080)")
    parser.add_argument("--count", type=int, default=10, help="records to seed (default 10)")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds to wait for the connection and for each call (default 10)")
    args = parser.parse_args()

    summary, status = run(args.target, args.count, args.timeout)
    json.dump(summary, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
