"""``logdog [-o FILE]``: one ``tar.gz`` of what is needed to debug this host, as Bottlerocket's.

The daemon gathers the content (``GET /diagnostics``: its log, status, events, generations,
receipts, the settings with every secret redacted, host-container states and logs, update
status, rendered files' paths and checksums, versions); logdog writes it under
``bottlerocket-logs/`` in the archive, with ``logdog.errors`` listing what could not be had.
Standard library only (it ships in the admin image). The socket is found as apiclient finds it:
``-s``, ``$APICLIENT_SOCKET``, ``/run/api.sock``. Default output: ``bottlerocket-logs.tar.gz`` in
the system temporary directory, as Bottlerocket's logdog documents.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tarfile
import tempfile
import time

from reconciler.apiclient.transport import DEFAULT_SOCKET, Client, ClientError

ARCHIVE_DIR = "bottlerocket-logs"
DEFAULT_NAME = "bottlerocket-logs.tar.gz"


def default_output() -> str:
    return os.path.join(tempfile.gettempdir(), DEFAULT_NAME)


def gather(client: Client) -> tuple[dict[str, bytes], list[str]]:
    files: dict[str, bytes] = {}
    errors: list[str] = []
    try:
        answer = client.call("GET", "/diagnostics")
    except ClientError as error:
        errors.append(f"GET /diagnostics: {error}")
        answer = {}
    for name, content in sorted((answer or {}).items()):
        if isinstance(content, str):
            files[name] = content.encode()
        else:
            files[name] = (json.dumps(content, indent=2, sort_keys=True) + "\n").encode()
    for uri, name in (("/os", "os.json"), ("/updates/status", "updates-status.json")):
        try:
            files[name] = (json.dumps(client.call("GET", uri), indent=2) + "\n").encode()
        except ClientError as error:
            errors.append(f"GET {uri}: {error}")
    return files, errors


def write_archive(path: str, files: dict[str, bytes], errors: list[str]) -> None:
    if errors:
        files = {**files, "logdog.errors": ("\n".join(errors) + "\n").encode()}
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=".logdog.")
    now = time.time()
    try:
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
            for name, data in sorted(files.items()):
                info = tarfile.TarInfo(f"{ARCHIVE_DIR}/{name}")
                info.size, info.mtime, info.mode = len(data), int(now), 0o600
                tar.addfile(info, io.BytesIO(data))
        os.chmod(temporary, 0o600)  # logs are for the operator only
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="logdog", description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", default=None,
                        help=f"archive to write (default {default_output()})")
    parser.add_argument("-s", "--socket-path", help="API socket")
    args = parser.parse_args(argv)
    socket_path = args.socket_path or os.environ.get("APICLIENT_SOCKET") or DEFAULT_SOCKET
    output = args.output or default_output()
    client = Client(socket_path)
    try:
        files, errors = gather(client)
    finally:
        client.close()
    if not files:
        print(f"logdog: nothing gathered: {'; '.join(errors)}", file=sys.stderr)
        return 1
    try:
        write_archive(output, files, errors)
    except OSError as error:
        print(f"logdog: cannot write {output}: {error}", file=sys.stderr)
        return 1
    for error in errors:
        print(f"logdog: {error}", file=sys.stderr)
    print(f"logs are at: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
