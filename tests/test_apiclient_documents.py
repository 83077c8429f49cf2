"""``apiclient apply`` reads documents with the user-data parser (``hostcore.documents``).

Same acceptance and the same one-line errors as ``reconciler validate`` (the user-data path), for
TOML dates, gzip, YAML and JSON alike; and the zipapp shipped into host containers carries that
parser, so it works on a bare interpreter without site-packages.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.containers import HostContainers
from tests.daemon import REPO, Daemon, cli, ok

REFUSED = {
    "date.toml": b"[settings]\nmotd = 1979-05-27\n",
    "datetime.toml.gz": gzip.compress(b"[settings]\nmotd = 1979-05-27T07:32:00Z\n"),
    "truncated.toml.gz": gzip.compress(b'[settings]\nmotd = "cut short"\n')[:-6],
    "unterminated.toml": b'[settings]\nmotd = "unterminated\n',
    "nan.json": b'{"settings": {"motd": NaN}}',
    "duplicate.json": b'{"settings": {"motd": "a", "motd": "b"}}',
    "two-documents.yaml": b"settings: {motd: a}\n---\nsettings: {motd: b}\n",
    "unclosed.yaml": b"settings: [unclosed\n",
    "number-name.yaml": b"settings:\n  1: x\n",
    "latin1.toml": '[settings]\nmotd = "caf\xe9"\n'.encode("latin-1"),
    "no-settings.toml": b'motd = "no settings table"\n',
    "settings-not-a-table.json": b'{"settings": [1, 2]}',
}
STANDARD_LIBRARY_ONLY = [n for n in REFUSED if ".yaml" not in n]  # YAML needs ruamel.yaml


def apiclient(*args: str, python: tuple[str, ...] = (sys.executable, "-m", "reconciler.apiclient"),
              socket: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "APICLIENT_SOCKET": str(socket or "/nonexistent/api.sock")}
    return subprocess.run([*python, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=60, check=False)


@pytest.fixture
def documents(tmp_path: Path) -> Path:
    for name, data in REFUSED.items():
        (tmp_path / name).write_bytes(data)
    return tmp_path


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_apply_refuses_what_user_data_refuses_with_the_same_message(
    documents: Path, name: str
) -> None:
    path = str(documents / name)
    validate = cli("validate", path)
    applied = apiclient("apply", path)  # parsed before the (absent) server is asked anything
    assert validate.returncode == 1 and applied.returncode == 1
    assert validate.stderr.startswith(f"{path}: ") and validate.stderr.count("\n") == 1
    assert applied.stderr == validate.stderr


def test_the_zipapp_carries_the_parser(tmp_path: Path, documents: Path) -> None:
    """``-I -S``: no site-packages, no editable install; only the zipapp and the stdlib."""
    zipapp = HostContainers(tmp_path / "state")._apiclient()
    bare = (sys.executable, "-I", "-S", str(zipapp))
    for name in STANDARD_LIBRARY_ONLY:
        path = str(documents / name)
        assert apiclient("apply", path, python=bare).stderr == cli("validate", path).stderr
    yaml = apiclient("apply", str(documents / "unclosed.yaml"), python=bare)
    assert yaml.returncode == 1
    assert yaml.stderr == (f"{documents / 'unclosed.yaml'}: YAML needs the ruamel.yaml package, "
                           "which is not installed here; use TOML or JSON\n")


def test_apply_accepts_gzip_and_yaml_like_user_data(tmp_path: Path) -> None:
    gzipped = tmp_path / "user-data"  # no extension: gzip detected, then TOML sniffed
    gzipped.write_bytes(gzip.compress(b'[settings]\nmotd = "from a gzip file"\n'))
    yaml = tmp_path / "more.yaml"
    yaml.write_text("settings:\n  ntp:\n    time-servers: [a.example.com]\n")
    for path in (gzipped, yaml):
        assert "valid for variant aws-dev" in ok(cli("validate", path))
    daemon = Daemon(tmp_path / "state", ["--variant", "aws-dev"])
    try:
        out = ok(apiclient("apply", str(gzipped), str(yaml), socket=daemon.socket))
        assert "Applied: ok" in out
        settings = daemon.ok("GET", "/settings")
        assert settings["motd"] == "from a gzip file"
        assert settings["ntp"]["time-servers"] == ["a.example.com"]
    finally:
        daemon.stop()


def test_the_apply_path_imports_the_standard_library_only() -> None:
    """Fast start: parsing a TOML or JSON document loads nothing outside the standard library
    but hostcore's own modules (ruamel.yaml waits for a YAML document)."""
    code = (
        "import sys; before = set(sys.modules)\n"
        "import reconciler.apiclient.commands as client\n"
        "client._parse_settings(b'[settings]\\nmotd = \"x\"\\n', 'a.toml')\n"
        "client._parse_settings(b'{\"settings\": {}}', 'b.json')\n"
        "new = {m.split('.')[0] for m in set(sys.modules) - before}\n"
        "print(' '.join(sorted(new - set(sys.stdlib_module_names))))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["hostcore", "reconciler"]
