"""``enable-admin-container``: turn the admin host container on through the API, wait until it
runs, and say how to reach it (as Bottlerocket's control container offers).

Standard library only (it ships in the tools zipapp of the control image). The socket is found
as apiclient finds it: ``-s``, ``$APICLIENT_SOCKET``, ``/run/api.sock``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from reconciler.apiclient.transport import DEFAULT_SOCKET, Client, ClientError, discard, query

NAME = "admin"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="enable-admin-container", description=__doc__)
    parser.add_argument("-s", "--socket-path", help="API socket")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds to wait for the container to run (default 300)")
    args = parser.parse_args(argv)
    socket_path = args.socket_path or os.environ.get("APICLIENT_SOCKET") or DEFAULT_SOCKET
    client = Client(socket_path)
    try:
        return enable(client, args.timeout)
    except ClientError as error:
        print(f"enable-admin-container: {error}", file=sys.stderr)
        return 1
    finally:
        client.close()


def enable(client: Client, timeout: float) -> int:
    tx = "enable-admin-container-" + os.urandom(4).hex()
    client.call("PATCH", query("/settings", tx=tx),
                {"host-containers": {NAME: {"enabled": True}}})
    try:
        client.call("POST", query("/tx/commit_and_apply", tx=tx, wait="true"))
    except ClientError as error:
        discard(client, tx)
        if "Nothing to commit" not in str(error) and "422" not in str(error):
            raise
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        status = client.call("GET", "/status") or {}
        record = ((status.get("containers") or {}).get("host-containers") or {}).get(NAME) or {}
        state = record.get("state", "pending")
        if state == "running":
            break
        if state in ("failed", "invalid") and record.get("last_error"):
            raise ClientError(f"the {NAME} container {state}: {record['last_error']}")
        if record.get("last_error") and record["last_error"] != last:
            last = record["last_error"]
            print(f"waiting: {last}", file=sys.stderr)
        if time.monotonic() > deadline:
            raise ClientError(f"the {NAME} container is not running after {timeout:.0f} s"
                              f" (state: {state})")
        time.sleep(0.5)
    print(f"The {NAME} container is running. SSH to this host (port: ssh.port of its user data,"
          f" default 22), or from here: apiclient exec {NAME} bash")
    return 0


if __name__ == "__main__":
    sys.exit(main())
