"""``apiclient`` against a real daemon: Bottlerocket's raw form and every subcommand.

No mocks: each test starts ``reconciler serve`` (variant aws-dev, the example user data) in a
subprocess and runs the client as ``python -m reconciler.apiclient`` with ``APICLIENT_SOCKET``.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.daemon import Daemon, eventually, ok

USER_DATA = "examples/user-data/aws-dev.toml"
BOOT_MOTD = "hello from the fleet"  # from the example user data


def motd_file(daemon: Daemon) -> Path:
    return daemon.root / "etc" / "motd"


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    running = Daemon(tmp_path / "state", ["--variant", "aws-dev", "--user-data", USER_DATA])
    yield running
    running.stop()


@pytest.fixture
def apiclient(daemon: Daemon) -> Callable[..., subprocess.CompletedProcess[str]]:
    return daemon.apiclient


def settings(apiclient) -> dict:
    return json.loads(ok(apiclient("-u", "/settings")))


def transactions(apiclient) -> list[str]:
    return json.loads(ok(apiclient("-u", "/tx/list")))


def live_generation(apiclient) -> int:
    return json.loads(ok(apiclient("status", "--json")))["live_generation"]


def wait_ready(apiclient) -> dict:
    def ready():
        status = json.loads(ok(apiclient("status", "--json")))
        return status if status["state"] == "Ready" else None

    return eventually(ready, timeout=20)


# ---- Bottlerocket's raw form -------------------------------------------------------------------


def test_readme_settings_commands_verbatim(daemon, apiclient):
    # apiclient -u /settings
    assert settings(apiclient)["motd"] == BOOT_MOTD
    # apiclient -m PATCH -u /settings -d '{"motd": "my own value!"}'
    patched = apiclient("-m", "PATCH", "-u", "/settings", "-d", '{"motd": "my own value!"}')
    assert ok(patched) == ""
    # apiclient -u /tx
    assert json.loads(ok(apiclient("-u", "/tx"))) == {"motd": "my own value!"}
    assert settings(apiclient)["motd"] == BOOT_MOTD  # pending until committed
    # apiclient -m POST -u /tx/commit_and_apply
    assert json.loads(ok(apiclient("-m", "POST", "-u", "/tx/commit_and_apply"))) == [
        "settings.motd"
    ]
    eventually(
        lambda: (
            motd_file(daemon).is_file() and motd_file(daemon).read_text().strip() == "my own value!"
        ),
        timeout=20,
    )
    assert settings(apiclient)["motd"] == "my own value!"


def test_raw_subcommand_and_X_synonym(apiclient):
    ok(apiclient("-u", "/settings", "-X", "PATCH", "-d", '{"motd": "via -X"}'))
    assert json.loads(ok(apiclient("raw", "-u", "/tx"))) == {"motd": "via -X"}
    ok(apiclient("raw", "-X", "PATCH", "-u", "/settings", "-d", '{"motd": "via raw"}'))
    assert json.loads(ok(apiclient("-u", "/tx"))) == {"motd": "via raw"}
    verbose = apiclient("-v", "-m", "DELETE", "-u", "/tx")
    assert json.loads(ok(verbose)) == ["settings.motd"]
    assert verbose.stderr.startswith("200")


def test_verbose_prints_status_of_an_empty_answer(apiclient):
    result = apiclient("-v", "-m", "PATCH", "-u", "/settings", "-d", '{"motd": "x"}')
    assert ok(result) == ""
    assert result.stderr.startswith("204")


def test_non_2xx_exits_1_with_the_status_message(apiclient):
    missing = apiclient("-u", "/no-such-endpoint")
    assert missing.returncode == 1
    assert missing.stdout == ""
    assert missing.stderr.startswith("Status 404 when GETing /no-such-endpoint: ")

    invalid = apiclient("-m", "PATCH", "-u", "/settings", "-d", '{"motd": 5}')
    assert invalid.returncode == 1
    assert invalid.stderr.startswith("Status 400 when PATCHing /settings: ")
    assert "settings.motd" in invalid.stderr

    nothing = apiclient("-m", "POST", "-u", "/tx/commit")
    assert nothing.returncode == 1
    assert nothing.stderr.startswith("Status 422 when POSTing /tx/commit: ")


def test_unreachable_socket_is_reported(apiclient, tmp_path):
    result = apiclient("-s", str(tmp_path / "nowhere.sock"), "get", "settings.motd")
    assert result.returncode == 1
    assert "nowhere.sock" in result.stderr


# ---- get ---------------------------------------------------------------------------------------


def test_get(apiclient):
    assert json.loads(ok(apiclient("get", "settings.motd"))) == {"settings": {"motd": BOOT_MOTD}}
    merged = json.loads(ok(apiclient("get", "settings.motd", "os.arch")))
    assert merged["settings"] == {"motd": BOOT_MOTD}
    assert list(merged["os"]) == ["arch"]
    everything = json.loads(ok(apiclient("get")))
    assert set(everything) == {"os", "settings"}
    assert everything["settings"]["aws"]["region"] == "us-west-2"
    assert json.loads(ok(apiclient("get", "motd"))) == {"settings": {"motd": BOOT_MOTD}}
    assert json.loads(ok(apiclient("get", "/os")))["variant_id"] == "aws-dev"
    assert json.loads(ok(apiclient("get", "settings.no-such-thing"))) == {}


# ---- set ---------------------------------------------------------------------------------------


def test_set_keypairs(daemon, apiclient):
    result = apiclient(
        "set", "motd=set by keypair", 'settings.ntp.time-servers=["ntp.example.com"]'
    )
    out = ok(result)
    assert "settings.motd" in out and "settings.ntp.time-servers" in out
    assert re.search(r"generation \d+", out)
    assert "Applied: ok" in out
    # the pass has finished when ``set`` returns
    assert motd_file(daemon).read_text().strip() == "set by keypair"
    current = settings(apiclient)
    assert current["motd"] == "set by keypair"
    assert current["ntp"]["time-servers"] == ["ntp.example.com"]
    assert not [t for t in transactions(apiclient) if t.startswith("apiclient-set-")]


def test_set_json(daemon, apiclient):
    out = ok(apiclient("set", "--json", '{"motd": "set by json"}'))
    assert "settings.motd" in out
    assert motd_file(daemon).read_text().strip() == "set by json"
    ok(apiclient("set", "-j", '{"aws": {"region": "eu-west-1"}}'))
    assert settings(apiclient)["aws"]["region"] == "eu-west-1"


def test_set_invalid_value_changes_nothing(apiclient):
    before = live_generation(apiclient)
    result = apiclient("set", "motd=fine", "aws.region=not a region")
    assert result.returncode == 1
    assert "Status 400 when PATCHing" in result.stderr
    assert "settings.aws.region" in result.stderr
    assert settings(apiclient)["motd"] == BOOT_MOTD
    assert live_generation(apiclient) == before
    assert transactions(apiclient) == []


def test_set_needs_pairs_or_json(apiclient):
    assert apiclient("set").returncode == 1
    assert apiclient("set", "novalue").returncode == 1


# ---- apply -------------------------------------------------------------------------------------


def test_apply_toml_files_in_order(daemon, apiclient, tmp_path):
    first = tmp_path / "first.toml"
    first.write_text(
        '[settings]\nmotd = "first"\n[settings.ntp]\ntime-servers = ["a.example.com"]\n'
    )
    second = tmp_path / "second.toml"
    second.write_text('[settings]\nmotd = "second wins"\n')
    out = ok(apiclient("apply", str(first), str(second)))
    assert "settings.motd" in out and "Applied: ok" in out
    current = settings(apiclient)
    assert current["motd"] == "second wins"
    assert current["ntp"]["time-servers"] == ["a.example.com"]
    assert motd_file(daemon).read_text().strip() == "second wins"
    assert transactions(apiclient) == []


def test_apply_stdin(daemon, apiclient):
    ok(apiclient("apply", stdin='[settings]\nmotd = "from stdin"\n'))
    assert motd_file(daemon).read_text().strip() == "from stdin"
    ok(apiclient("apply", "-", stdin='{"settings": {"motd": "json from stdin"}}'))
    assert settings(apiclient)["motd"] == "json from stdin"


def test_apply_yaml_file(apiclient):
    ok(apiclient("apply", "examples/user-data/aws-dev.yaml"))
    assert settings(apiclient)["aws"]["region"]


@pytest.mark.parametrize(
    "bad",
    [
        '[settings]\nmotd = "unterminated\n',  # not TOML
        "[settings]\nmotd = 42\n",  # parses, fails the schema on the server
        'motd = "no settings table"\n',
    ],
    ids=["syntax", "schema", "no-settings"],
)
def test_apply_with_one_bad_document_applies_nothing(apiclient, tmp_path, bad):
    good = tmp_path / "good.toml"
    good.write_text('[settings]\nmotd = "should not land"\n')
    broken = tmp_path / "broken.toml"
    broken.write_text(bad)
    before = live_generation(apiclient)
    result = apiclient("apply", str(good), str(broken))
    assert result.returncode == 1
    assert "broken.toml" in result.stderr
    assert settings(apiclient)["motd"] == BOOT_MOTD
    assert live_generation(apiclient) == before
    assert transactions(apiclient) == []


# ---- plan, status, history, rollback, explain --------------------------------------------------


def test_plan(apiclient):
    ok(apiclient("-m", "PATCH", "-u", "/settings?tx=review", "-d", '{"motd": "planned"}'))
    out = ok(apiclient("plan", "--tx", "review"))
    assert f'settings.motd: "{BOOT_MOTD}" -> "planned"' in out
    assert "/etc/motd" in out
    assert f"-{BOOT_MOTD}" in out and "+planned" in out  # the unified diff
    assert re.search(r"^  motd: would restart", out, re.MULTILINE)
    raw = json.loads(ok(apiclient("plan", "--tx", "review", "--json")))
    assert raw["settings"] == [{"key": "settings.motd", "old": BOOT_MOTD, "new": "planned"}]
    # a dry run: nothing committed
    assert settings(apiclient)["motd"] == BOOT_MOTD
    assert transactions(apiclient) == ["review"]
    assert "no pending change" in ok(apiclient("plan"))


def test_status(apiclient):
    raw = wait_ready(apiclient)
    out = ok(apiclient("status"))
    assert out.startswith("State:       Ready")
    live = raw["live_generation"]
    assert f"Generations: live {live}, applied {live}" in out
    assert re.search(r"^Last pass #\d+: ok", out, re.MULTILINE)


def test_history(apiclient):
    ok(apiclient("set", "motd=for history"))
    lines = ok(apiclient("history")).splitlines()
    newest = lines[0].split()
    assert newest[0] == str(live_generation(apiclient))
    assert newest[3].startswith("api:apiclient-set-")
    assert "settings.motd" in lines[0]
    assert "user-data" in lines[-1]  # the boot generation
    assert len(ok(apiclient("history", "--limit", "1")).splitlines()) == 1


def test_rollback(daemon, apiclient):
    ok(apiclient("set", "motd=mistake"))
    assert motd_file(daemon).read_text().strip() == "mistake"
    out = ok(apiclient("rollback"))
    assert "settings.motd" in out and "Applied: ok" in out
    assert settings(apiclient)["motd"] == BOOT_MOTD
    assert motd_file(daemon).read_text().strip() == BOOT_MOTD
    # explicit generation: back to the "mistake"
    mistake = json.loads(ok(apiclient("history", "--json")))[1]["generation"]
    ok(apiclient("rollback", "--generation", str(mistake)))
    assert settings(apiclient)["motd"] == "mistake"
    bad = apiclient("rollback", "--generation", "999")
    assert bad.returncode == 1 and "Status 404" in bad.stderr


def test_explain_names_the_source(apiclient):
    out = ok(apiclient("explain", "motd"))
    assert out.startswith(f'settings.motd = "{BOOT_MOTD}"')
    assert re.search(r"source:\s+user-data", out)
    ok(apiclient("set", "motd=explained"))
    out = ok(apiclient("explain", "settings.motd"))
    assert re.search(r"source:\s+api:apiclient-set-", out)
    assert f'"{BOOT_MOTD}" -> "explained"' in out  # the key's history
    assert "user-data" in out
    missing = apiclient("explain", "no-such-key")
    assert missing.returncode == 1
    assert "not set" in missing.stdout


# ---- reboot, update ----------------------------------------------------------------------------


def test_reboot_in_a_sandbox_is_accepted(apiclient):
    assert "Reboot requested" in ok(apiclient("reboot"))


def test_update_check_reports_the_server(apiclient):
    result = apiclient("update", "check")
    if result.returncode == 0:  # the update endpoints exist
        assert "update_state" in json.loads(result.stdout)
    else:
        assert result.returncode == 1
        assert result.stderr.startswith("Status ")
