"""A scratch renderer folder (``metadata.toml`` and ``templates/``), for tests whose services
are small scripts: written once here, used by the ``scratch_renderers`` fixture of
tests/conftest.py and by helpers that build a host outside a fixture."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path


def write_renderers(folder: Path, metadata: str, templates: Mapping[str, str],
                    **values: object) -> Path:
    """Write ``folder`` with ``metadata`` (each ``{name}`` replaced by ``values[name]``, and
    ``{python}`` by this interpreter) and the ``templates`` (name -> text); returns ``folder``."""
    (folder / "templates").mkdir(parents=True, exist_ok=True)
    text = metadata
    for name, value in {"python": sys.executable, **values}.items():
        text = text.replace("{" + name + "}", str(value))
    (folder / "metadata.toml").write_text(text)
    for name, body in templates.items():
        (folder / "templates" / name).write_text(body)
    return folder
