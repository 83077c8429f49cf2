"""python-tuf is pinned to the major we test, because ``DurableUpdater`` overrides two of its
private methods (``_persist_file``, ``_update_root_symlink``) and reads its private state.

If a python-tuf release renames, re-signs or stops calling them, our fsync-before-rename and
atomic root-link swap would silently stop applying: these checks fail first.
"""

from __future__ import annotations

import inspect
import tomllib
from pathlib import Path

import tuf
from packaging.requirements import Requirement
from packaging.version import Version
from tuf.ngclient.updater import Updater

from updates.tuf_client import DurableUpdater

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
OVERRIDDEN = {"_persist_file": ["self", "filename", "data"], "_update_root_symlink": ["self"]}


def tuf_requirement() -> Requirement:
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    (found,) = [Requirement(d) for d in dependencies if Requirement(d).name == "tuf"]
    return found


def test_the_pin_allows_the_tested_major_only() -> None:
    installed = Version(tuf.__version__)
    spec = tuf_requirement().specifier
    assert installed in spec, f"tuf {installed} is outside the pin {spec}"
    assert Version(f"{installed.major + 1}.0.0") not in spec, f"{spec} allows the next major"
    assert Version(f"{installed.major - 1}.99.0") not in spec, f"{spec} allows the last major"


def test_the_private_methods_we_override_exist_with_their_signatures() -> None:
    for name, parameters in OVERRIDDEN.items():
        upstream = getattr(Updater, name, None)
        assert upstream is not None, f"python-tuf {tuf.__version__} has no Updater.{name}"
        assert list(inspect.signature(upstream).parameters) == parameters, name
        ours = DurableUpdater.__dict__[name]
        assert list(inspect.signature(ours).parameters) == parameters, name


def test_upstream_still_calls_them_and_keeps_the_state_we_read() -> None:
    source = inspect.getsource(Updater)
    for name in OVERRIDDEN:
        assert f"self.{name}(" in source, f"Updater no longer calls {name}"
    for attribute in ("self._dir", "self._trusted_set"):  # read by _update_root_symlink
        assert f"{attribute} =" in source, f"Updater no longer sets {attribute}"
