"""``reconciler validate`` offline, the installed wheel carrying its data files, and every
command's help and refusal of bad flags and files (no traceback)."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import textwrap
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

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


# ---- every command: --help exits 0, bad flags and files never end in a traceback ---------------


def _argparse_commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list:
    """Every (sub)command path of an argparse parser, the parser's own first."""
    paths = [prefix]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths += _argparse_commands(sub, (*prefix, name))
    return paths


def _all_commands() -> list[tuple[str, ...]]:
    from reconciler import cli as reconciler_cli
    from reconciler.apiclient import arguments as apiclient
    from reconciler.fleet import server as fleetlock
    from updates import updata

    commands = [("reconciler.cli", *p) for p in _argparse_commands(reconciler_cli._parser())]
    commands += [("reconciler.apiclient", *p) for p in _argparse_commands(apiclient.build_parser())]
    commands += [("updates.updata", *p) for p in _argparse_commands(updata.build_parser())]
    commands += [("reconciler.fleet.server", *p) for p in _argparse_commands(fleetlock._parser())]
    for module, usage in (("updates.updog", "updog"), ("updates.signpost", "signpost")):
        text = __import__(module, fromlist=["USAGE"]).USAGE
        section = text.split("SUBCOMMANDS:", 1)[1].split("OPTIONS:", 1)[0]
        names = re.findall(r"^    ([a-z][a-z-]+) ", section, re.MULTILINE)
        assert len(names) > 5, usage
        commands += [(module,), *((module, name) for name in names if name != "tuf-client")]
    return commands


def _run_module(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "APICLIENT_SOCKET": "/nonexistent/api.sock"}
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def _run_all(invocations: list[tuple[str, ...]]) -> list[subprocess.CompletedProcess[str]]:
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(lambda args: _run_module(*args), invocations))


def test_every_command_help_exits_0_in_plain_text():
    commands = _all_commands()
    assert ("reconciler.apiclient", "events") in commands
    assert ("updates.updog", "update") in commands
    failures = []
    for result in _run_all([(*command, "--help") for command in commands]):
        output = result.stdout + result.stderr
        if (result.returncode != 0 or "Traceback" in output or not result.stdout.strip()
                or "``" in output):  # no RST markup
            failures.append((result.args[2:], result.returncode, output[-300:]))
    assert not failures


def test_every_command_refuses_a_bad_flag_without_a_traceback():
    invocations = [(*command, "--no-such-flag") for command in _all_commands()]
    failures = []
    for result in _run_all(invocations):
        output = result.stdout + result.stderr
        # argparse names missing required arguments before unknown ones: either is a refusal
        refused = "no-such-flag" in output or "arguments are required" in result.stderr
        if result.returncode not in (1, 2) or "Traceback" in output or not refused:
            failures.append((result.args[2:], result.returncode, output[-300:]))
    assert not failures


def _argparse_parsers() -> list[argparse.ArgumentParser]:
    from reconciler import cli as reconciler_cli
    from reconciler.apiclient import arguments
    from reconciler.fleet import server as fleetlock
    from updates import updata

    return [reconciler_cli._parser(), arguments.build_parser(), updata.build_parser(),
            fleetlock._parser()]


@pytest.mark.parametrize("parser", _argparse_parsers(), ids=lambda p: p.prog)
def test_every_option_has_help_with_its_default(parser):
    """``reconciler``, ``apiclient``, ``updata`` and ``fleetlock``: every option of every
    (sub)command has help text, and the text names the default whenever there is one."""
    for path in _argparse_commands(parser):
        sub = parser
        for name in path:
            sub = next(a for a in sub._actions
                       if isinstance(a, argparse._SubParsersAction)).choices[name]
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            if action.help == argparse.SUPPRESS:
                continue
            assert action.help, (parser.prog, path, action.option_strings or action.dest)
            shown = sub.formatter_class(sub.prog)._get_help_string(action)
            if action.default not in (None, False, [], argparse.SUPPRESS):
                assert "default" in shown, (parser.prog, path, action.option_strings)


def test_bad_values_and_files_are_one_line_errors(tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    cases = [
        (("validate", "--variant", "aws-foo", "examples/user-data/aws-dev.toml"),
         "unknown variant 'aws-foo'; valid variants: aws-dev"),
        (("--log-level", "foo", "validate", "examples/user-data/aws-dev.toml"),
         "invalid choice: 'foo'"),
        (("validate", str(tmp_path / "missing.toml")), "No such file or directory"),
        (("validate", str(tmp_path)), "directory"),
        (("plan", "--state-dir", str(a_file)), str(a_file)),
        (("plan", "--state-dir", str(tmp_path / "s"), "--variant", "aws-bar"),
         "unknown variant 'aws-bar'"),
        (("plan", "--state-dir", str(tmp_path / "s")), "holds no host"),
        (("serve", "--once", "--state-dir", str(tmp_path / "s4"), "--renderers",
          str(tmp_path / "none")), "metadata.toml"),
        (("serve", "--once", "--state-dir", str(tmp_path / "s2"), "--user-data",
          str(tmp_path / "missing.toml")), "missing.toml"),
        (("serve", "--state-dir", str(tmp_path / "s3"), "--interval", "soon"),
         "invalid float value: 'soon'"),
        (("generate", "nope"), "unknown generator 'nope'"),
    ]
    results = _run_all([("reconciler.cli", *args) for args, _ in cases])
    for (args, expected), result in zip(cases, results, strict=True):
        assert result.returncode in (1, 2), (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr, (args, result.stderr)
        assert expected in result.stderr, (args, result.stderr)
    assert cli("--log-level", "WARNING", "validate", "examples/user-data/aws-dev.toml"
               ).returncode == 0
