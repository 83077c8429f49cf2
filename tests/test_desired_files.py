"""Local desired-state files (``serve --desired``): applied at start and re-applied on change."""

from __future__ import annotations

from tests.daemon import Daemon, eventually


def motd(d: Daemon) -> str:
    path = d.root / "etc/motd"
    return path.read_text() if path.exists() else ""


def test_desired_file_is_applied_watched_and_pruned(tmp_path):
    desired = tmp_path / "desired.toml"
    desired.write_text('[settings]\nmotd = "from the file"\n[settings.aws]\nregion = "eu-west-1"\n')
    d = Daemon(tmp_path / "state", ["--desired", str(desired)])
    try:
        eventually(lambda: motd(d).startswith("from the file"))
        source = d.ok("GET", "/provenance?keys=settings.motd")["settings.motd"]["source"]
        assert source == f"file:{desired.resolve()}"

        desired.write_text('[settings]\nmotd = "edited"\n[settings.aws]\nregion = "eu-west-1"\n')
        eventually(lambda: motd(d).startswith("edited"))

        desired.write_text('[settings.aws]\nregion = "eu-west-1"\n')  # motd no longer declared
        eventually(lambda: d.ok("GET", "/provenance?keys=settings.motd")["settings.motd"]["source"]
                   == "default")

        desired.write_text('[settings.ntp]\ntime-server = ["x"]\n')  # a typo: nothing applied
        status = eventually(lambda: (s := d.ok("GET", "/status")["desired_files"])["condition"]
                            == "Invalid" and s)
        assert "settings.ntp.time-server" in status["reason"] and "desired.toml" in status["reason"]
        assert d.ok("GET", "/settings")["aws"]["region"] == "eu-west-1"
    finally:
        d.stop()
