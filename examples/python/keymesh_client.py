#!/usr/bin/python3
"""A small keymesh client in Python, built on stubs generated from proto/.

It talks plain gRPC (HTTP/2, binary protobuf, no TLS) to a running keymesh server:

  1. grpc.health.v1.Health/Check for the whole server ("") and for CollectionService;
  2. authenticates: with --username it logs in (AuthService.Register first with
     --register), reading the password from stdin; otherwise it uses the token in
     KEYMESH_TOKEN; then AuthService.WhoAmI;
  3. CollectionService.SeedRecords(count=N), then CollectionService.GetProgress;
  4. KeyManagementService.CreateKeyringKeys(count=2), then ListKeyringKeys;

Every call after the login carries `authorization: Bearer <token>` as gRPC metadata.
Seeding records and creating keys need an admin (e.g. the development root token that
`npm start` writes to data/root-token); a plain user gets PERMISSION_DENIED for them.

and prints one JSON summary to stdout. Every call's entry carries "code", the gRPC status
code name ("OK", "UNIMPLEMENTED", ...); failed calls also carry "details".

Usage:
  examples/python/generate.sh                      # once, to create examples/python/gen/
  KEYMESH_TOKEN="$(cat data/root-token)" /usr/bin/python3 examples/python/keymesh_client.py 127.0.0.1:8080 [--count N]
  echo "$PASSWORD" | /usr/bin/python3 examples/python/keymesh_client.py 127.0.0.1:8080 --username alice [--register]

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
from keymesh.auth.v1 import auth_service_pb2 as auth_pb2  # noqa: E402
from keymesh.auth.v1 import auth_service_pb2_grpc as auth_grpc  # noqa: E402
from keymesh.collection.v1 import collection_service_pb2 as collection_pb2  # noqa: E402
from keymesh.collection.v1 import collection_service_pb2_grpc as collection_grpc  # noqa: E402
from keymesh.keys.v1 import key_management_service_pb2 as keys_pb2  # noqa: E402
from keymesh.keys.v1 import key_management_service_pb2_grpc as keys_grpc  # noqa: E402

# The fully-qualified service name, as the server registers it for health checks.
COLLECTION_SERVICE = collection_pb2.DESCRIPTOR.services_by_name["CollectionService"].full_name


def call(rpc, request, timeout, describe, token=None):
    """Runs one unary call; returns {"code": ..., **describe(response)} or the error."""
    metadata = (("authorization", "Bearer " + token),) if token else None
    try:
        response = rpc(request, timeout=timeout, metadata=metadata)
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


def run(target, count, timeout, username=None, password=None, register=False):
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
        auth = auth_grpc.AuthServiceStub(channel)

        summary["health"] = {
            service: call(
                health.Check,
                health_pb2.HealthCheckRequest(service=service),
                timeout,
                lambda r: {"status": health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)},
            )
            for service in ("", COLLECTION_SERVICE)
        }

        token = os.environ.get("KEYMESH_TOKEN") or None
        steps = []
        if username is not None:
            if register:
                summary["register"] = call(
                    auth.Register,
                    auth_pb2.RegisterRequest(username=username, password=password),
                    timeout,
                    lambda r: {"userId": r.user_id},
                )
                steps.append("register")
            issued = {}

            def keep(response):
                issued["token"] = response.token
                return {"expiresAtMs": response.expires_at_ms}

            # The token itself stays out of the summary: it is a credential.
            summary["login"] = call(
                auth.Login, auth_pb2.LoginRequest(username=username, password=password), timeout, keep)
            steps.append("login")
            token = issued.get("token")
        summary["whoAmI"] = call(
            auth.WhoAmI,
            auth_pb2.WhoAmIRequest(),
            timeout,
            lambda r: {"username": r.username, "admin": r.admin,
                       "kind": auth_pb2.PrincipalKind.Name(r.kind)},
            token,
        )

        summary["seedRecords"] = call(
            collection.SeedRecords,
            collection_pb2.SeedRecordsRequest(count=count),
            timeout,
            lambda r: {"inserted": r.inserted, "total": r.total},
            token,
        )
        summary["getProgress"] = call(
            collection.GetProgress,
            collection_pb2.GetProgressRequest(),
            timeout,
            lambda r: {"total": r.total, "signed": r.signed, "claimed": r.claimed},
            token,
        )

        summary["createKeyringKeys"] = call(
            keys.CreateKeyringKeys,
            keys_pb2.CreateKeyringKeysRequest(count=2),
            timeout,
            lambda r: {"keys": [describe_keyring_key(k) for k in r.keys]},
            token,
        )
        summary["listKeyringKeys"] = call(
            keys.ListKeyringKeys,
            keys_pb2.ListKeyringKeysRequest(),
            timeout,
            lambda r: {
                "keys": [describe_keyring_key(k) for k in r.keys],
                "nextPageToken": r.next_page_token,
            },
            token,
        )

    codes = [summary["health"][s]["code"] for s in summary["health"]]
    codes += [summary[name]["code"] for name in steps + [
              "whoAmI", "seedRecords", "getProgress", "createKeyringKeys", "listKeyringKeys"]]
    return summary, 0 if all(code == "OK" for code in codes) else 3


def main():
    parser = argparse.ArgumentParser(description="Exercise a keymesh server over gRPC.")
    parser.add_argument("target", help="server address, host:port (e.g. 127.0.0.1:8080)")
    parser.add_argument("--count", type=int, default=10, help="records to seed (default 10)")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds to wait for the connection and for each call (default 10)")
    parser.add_argument("--username", help="log in as this user (password: first line of stdin)")
    parser.add_argument("--register", action="store_true", help="register the user before logging in")
    args = parser.parse_args()

    password = None
    if args.username is not None:
        # Never from argv: other users of the machine can read a process's arguments.
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            die("--username needs the password on the first line of stdin")
    elif args.register:
        die("--register needs --username")

    summary, status = run(args.target, args.count, args.timeout, args.username, password, args.register)
    json.dump(summary, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
