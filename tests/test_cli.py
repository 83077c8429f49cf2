"""``reconciler validate`` offline, and the installed wheel carrying its data files."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

from tests.daemon import REPO, cli


def validate(*args: str, cwd: Path = REPO, env: dict | None = None):
    return cli("validate", *args, cwd=cwd, env=env)


def test_validate_typo_bad_value_and_good_document(tmp_path):
    typo = tmp_path / "typo.toml"
    typo.write_text('[settings.ntp]\ntime-server = ["0.pool.ntp.org"]\n')
    result = validate(str(typo))
    assert result.returncode == 1
    assert "settings.ntp.time-server" in result.stderr and "time-servers" in result.stderr

    label = tmp_path / "label.yaml"
    label.write_text(textwrap.dedent("""
        settings:
          kubernetes:
            node-labels:
              "bad label": x
    """))
    result = validate("--variant", "aws-k8s", str(label))
    assert result.returncode == 1
    assert 'settings.kubernetes.node-labels."bad label"' in result.stderr
    assert "label" in result.stderr.split("bad label", 1)[1]

    for variant in ("aws-dev", "aws-k8s", "aws-ecs"):
        for ext in ("toml", "yaml"):
            good = REPO / f"examples/user-data/{variant}.{ext}"
            result = validate("--variant", variant, str(good))
            assert result.returncode == 0, result.stderr


def test_wheel_carries_schemas_templates_and_spec_and_works(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "-w", str(tmp_path / "dist"), str(REPO)],
                   check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for expected in ("schemas/kubernetes.json", "schemas/defaults.toml", "schemas/variants.toml",
                     "renderers/metadata.toml", "renderers/templates/motd.j2",
                     "reconciler/api/openapi.yaml"):
        assert expected in names, expected
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(target), str(wheel)], check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(target)}
    user_data = tmp_path / "user-data.toml"
    user_data.write_text('[settings]\nmotd = "from the wheel"\n')
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    where = subprocess.run([sys.executable, "-c", "import reconciler; print(reconciler.__file__)"],
                           cwd=outside, env=env, capture_output=True, text=True, check=True)
    assert where.stdout.startswith(str(target))
    assert validate(str(user_data), cwd=outside, env=env).returncode == 0
    once = cli("serve", "--state-dir", tmp_path / "state", "--user-data", user_data, "--once",
               cwd=outside, env=env)
    assert once.returncode == 0, once.stderr
    assert (tmp_path / "state/root/etc/motd").read_text().startswith("from the wheel")
