"""The layered sources' shared semantics, run against both: the git source (a real bare
repository, file:// URL) and the desired-state files (real files), each over a real store.

Same merge and ``null``, same ownership, same pruning, same whole-or-nothing refusals: both
sources go through ``reconciler.sources.applier.LayeredApplier``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from reconciler.events import Events
from reconciler.schema import Schema
from reconciler.sources.applier import (
    FILE_SOURCE_PREFIX,
    GIT_SOURCE_PREFIX,
    LayeredApplier,
    OwnedElsewhere,
)
from reconciler.sources.gitsync import GitSync
from reconciler.sources.layers import Layer
from reconciler.sources.localfiles import DesiredFiles
from reconciler.store import Store
from tests.gitutil import git

SCHEMA = Schema.load("aws-k8s")
# The layer names, in order; git keeps them under the pointer's path, files under a directory.
COMMON, GROUP, HOST = "common.toml", "groups/web.toml", "hosts/h1.toml"


def commit_as(store: Store, source: str, patch: Mapping) -> None:
    store.add_patch(source, patch, source)
    store.commit(source, SCHEMA)


class GitSource:
    """The fleet repository source: each ``apply`` commits the layers and syncs."""

    prefix = GIT_SOURCE_PREFIX

    def __init__(self, base: Path, store: Store):
        self.store = store
        self.bare, self.work = base / "fleet.git", base / "work"
        self.work.mkdir()
        git("init", "-q", "--bare", "-b", "main", str(self.bare), cwd=base)
        git("init", "-q", "-b", "main", cwd=self.work)
        git("remote", "add", "origin", str(self.bare), cwd=self.work)
        commit_as(store, "user-data", {"gitops": {
            "url": f"file://{self.bare}", "ref": "main", "path": "fleet", "groups": ["web"],
            "host-id": "h1"}})
        self.sync = GitSync(store, SCHEMA, Events(), base / "clones")

    def apply(self, layers: Mapping[str, str]) -> tuple[str, str]:
        for old in (self.work / "fleet").rglob("*.toml"):
            old.unlink()
        for name, text in layers.items():
            path = self.work / "fleet" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        git("add", "-A", cwd=self.work)
        git("commit", "-q", "--allow-empty", "-m", "layers", cwd=self.work)
        git("push", "-q", "-f", "origin", "main", cwd=self.work)
        status = self.sync.sync()
        return status.condition, status.reason


class FileSource:
    """The desired-state files: each ``apply`` writes the files and applies them (a file no
    longer given is like a daemon restarted without that ``--desired``)."""

    prefix = FILE_SOURCE_PREFIX

    def __init__(self, base: Path, store: Store):
        self.store, self.base = store, base / "desired"

    def apply(self, layers: Mapping[str, str]) -> tuple[str, str]:
        paths = []
        for name, text in layers.items():
            path = self.base / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            paths.append(path)
        source = DesiredFiles(self.store, SCHEMA, Events(), paths)
        source.apply()
        return source.status["condition"], source.status["reason"]


@pytest.fixture(params=[GitSource, FileSource], ids=["git", "files"])
def source(request, tmp_path: Path) -> Iterator[GitSource | FileSource]:
    store = Store(tmp_path / "store.sqlite")
    try:
        yield request.param(tmp_path, store)
    finally:
        store.close()


def value_and_source(store: Store, key: str) -> tuple[object, str | None]:
    live = store.live(key)
    return live.get(key), store.sources(key).get(key)


def defaulted(store: Store, key: str) -> bool:
    """Whether ``key`` is back to its schema default (or unset, without one)."""
    return store.sources(key).get(key) in (None, "default")


def test_later_layers_win_and_keys_belong_to_the_source(source) -> None:
    condition, reason = source.apply({
        COMMON: '[settings]\nmotd = "common"\n[settings.aws]\nregion = "us-east-1"\n',
        GROUP: '[settings.aws]\nregion = "eu-west-1"\n',
    })
    assert condition in ("Synced", "Applied"), reason
    value, owner = value_and_source(source.store, "settings.aws.region")
    assert value == "eu-west-1" and owner.startswith(source.prefix)
    assert value_and_source(source.store, "settings.motd")[0] == "common"


def test_a_null_deletes_an_earlier_layer_s_key_never_another_source_s(source) -> None:
    commit_as(source.store, "api:one", {"kernel": {"lockdown": "integrity"}})
    source.apply({COMMON: '[settings]\nmotd = "common"\n'})
    assert value_and_source(source.store, "settings.motd")[0] == "common"
    condition, reason = source.apply({
        COMMON: '[settings]\nmotd = "common"\n',
        # JSON: TOML has no null
        "hosts/h1.json": '{"settings": {"motd": null, "kernel": {"lockdown": null}}}',
    })
    assert condition in ("Synced", "Applied"), reason
    assert defaulted(source.store, "settings.motd")  # deleted: back to its default
    # the null does not reach past the source: the API's value stays, and stays the API's
    assert value_and_source(source.store, "settings.kernel.lockdown") == ("integrity", "api:one")


def test_a_key_another_source_owns(source) -> None:
    # set by the API: the layered source takes it over
    commit_as(source.store, "api:one", {"motd": "from the api"})
    source.apply({COMMON: '[settings]\nmotd = "from layers"\n'})
    value, owner = value_and_source(source.store, "settings.motd")
    assert value == "from layers" and owner.startswith(source.prefix)
    # owned by the other layered source: refused whole, nothing changed
    rival = FILE_SOURCE_PREFIX if source.prefix == GIT_SOURCE_PREFIX else GIT_SOURCE_PREFIX
    commit_as(source.store, f"{rival}elsewhere", {"aws": {"region": "ap-south-1"}})
    condition, reason = source.apply({
        COMMON: '[settings]\nmotd = "changed"\n[settings.aws]\nregion = "us-east-1"\n'})
    assert condition == "Invalid"
    assert "settings.aws.region is owned by " + rival in reason and "common.toml" in reason
    assert value_and_source(source.store, "settings.motd")[0] == "from layers"
    assert value_and_source(source.store, "settings.aws.region") == (
        "ap-south-1", f"{rival}elsewhere")


def test_a_removed_layer_prunes_its_keys(source) -> None:
    source.apply({
        COMMON: '[settings]\nmotd = "common"\n',
        HOST: '[settings.aws]\nregion = "eu-west-1"\n[settings.ntp]\ntime-servers = ["a"]\n',
    })
    assert value_and_source(source.store, "settings.ntp.time-servers")[0] == ["a"]
    condition, reason = source.apply({COMMON: '[settings]\nmotd = "common"\n'})
    assert condition in ("Synced", "Applied"), reason
    assert defaulted(source.store, "settings.ntp.time-servers")
    assert defaulted(source.store, "settings.aws.region")
    assert value_and_source(source.store, "settings.motd")[0] == "common"


def test_an_invalid_layer_changes_nothing_and_names_file_and_key(source) -> None:
    source.apply({COMMON: '[settings]\nmotd = "good"\n'})
    condition, reason = source.apply({
        COMMON: '[settings]\nmotd = "never"\n',
        GROUP: '[settings.ntp]\ntime-server = ["typo"]\n',
    })
    assert condition == "Invalid"
    assert "groups/web.toml" in reason and "settings.ntp.time-server" in reason
    assert value_and_source(source.store, "settings.motd")[0] == "good"


def test_the_applier_raises_a_typed_refusal(tmp_path: Path) -> None:
    with Store(tmp_path / "store.sqlite") as store:
        commit_as(store, "git:abc", {"motd": "git's"})
        applier = LayeredApplier(store, SCHEMA, FILE_SOURCE_PREFIX, "t",
                                 lambda layer: f"file:{layer.origin}")
        with pytest.raises(OwnedElsewhere) as refused:
            applier.apply([Layer("/etc/desired.toml", {"motd": "mine"})])
        assert refused.value.keys == ["settings.motd"]
        assert "/etc/desired.toml: settings.motd is owned by git:abc" in str(refused.value)
        assert store.live("settings.motd") == {"settings.motd": "git's"}
