"""The standard-library-only tools of the project as one zipapp: ``apiclient``, ``logdog``,
``enable-admin-container``.

Host containers get it bind-mounted as ``/usr/local/bin/apiclient``; the admin and control
images carry it with one symbolic link per tool. Which tool runs is chosen from the name it was
started by (``argv[0]``), as busybox does, so one file serves them all and never drifts apart.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
import zipapp
from pathlib import Path

from hostcore.durable import replace_file

ROOT = Path(__file__).resolve().parent.parent
# Standard library only, importing nothing of ours outside this list (apiclient's ``apply``
# shares hostcore's document parser with user data).
MODULES = tuple(f"reconciler/{name}" for name in (
    "wsclient.py", "logdog.py", "enable_admin.py")) + tuple(
    f"reconciler/apiclient/{name}" for name in (
        "__init__.py", "__main__.py", "transport.py", "arguments.py", "commands.py", "format.py",
        "session.py", "cli.py")) + tuple(
    f"hostcore/{name}" for name in ("__init__.py", "keys.py", "documents.py", "unixhttp.py"))
TOOLS = {
    "apiclient": "reconciler.apiclient",
    "logdog": "reconciler.logdog",
    "enable-admin-container": "reconciler.enable_admin",
}
MAIN = '''import os
import sys

TOOLS = {tools!r}
name = os.path.basename(sys.argv[0])
module = TOOLS.get(name, "reconciler.apiclient")
if name not in TOOLS and len(sys.argv) > 1 and sys.argv[1] in TOOLS:
    module = TOOLS[sys.argv.pop(1)]  # python3 tools.pyz logdog ...
sys.exit(__import__(module, fromlist=["main"]).main())
'''


def sources() -> dict[str, bytes]:
    return {name: (ROOT / name).read_bytes() for name in MODULES}


def fingerprint() -> str:
    """Changes whenever any bundled module changes (cache key of the zipapp and the images)."""
    digest = hashlib.sha256()
    for name, data in sorted(sources().items()):
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    digest.update(MAIN.encode())
    return digest.hexdigest()


def zipapp_bytes() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        package = Path(tmp) / "app"
        for folder in ("reconciler", "reconciler/apiclient", "hostcore"):
            (package / folder).mkdir(parents=True)
        (package / "reconciler" / "__init__.py").write_text("")
        for name, data in sources().items():
            (package / name).write_bytes(data)
        (package / "__main__.py").write_text(MAIN.format(tools=TOOLS))
        built = io.BytesIO()
        zipapp.create_archive(package, built, interpreter="/usr/bin/env python3")
    return built.getvalue()


def ensure_zipapp(path: Path) -> Path:
    """The zipapp at ``path``, rebuilt only when a bundled module changed."""
    stamp = path.with_suffix(".source")
    wanted = fingerprint()
    if path.is_file() and stamp.is_file() and stamp.read_text() == wanted:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_file(path, zipapp_bytes(), 0o755)
    replace_file(stamp, wanted.encode(), 0o644)
    return path
