"""What the templates need to know about the host beyond its settings (``host`` in the model).

Why a separate input: a rendered file may build on a file the distribution owns, such as the
system CA bundle that the host's bundle extends. Reading it here, once per change of the file,
keeps rendering a pure function of (settings, os, host facts).
"""

from __future__ import annotations

import os
from pathlib import Path

SYSTEM_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")  # Debian's, by update-ca-certificates


class HostFacts:
    """The facts, re-read only when their file changes (a pass costs a ``stat``)."""

    def __init__(self, ca_bundle: Path = SYSTEM_CA_BUNDLE) -> None:
        self.ca_bundle_path = Path(ca_bundle)
        self._stamp: tuple[int, int] | None = None
        self._ca_bundle = ""

    def system_ca_bundle(self) -> str:
        """The distribution's CA bundle as text; empty when it is missing."""
        try:
            info = os.stat(self.ca_bundle_path)
        except OSError:
            self._stamp, self._ca_bundle = None, ""
            return ""
        stamp = (info.st_mtime_ns, info.st_size)
        if stamp != self._stamp:
            try:
                self._ca_bundle = self.ca_bundle_path.read_text(encoding="utf-8", errors="replace")
            except OSError:
                self._ca_bundle = ""
            self._stamp = stamp
        return self._ca_bundle

    def as_model(self) -> dict[str, str]:
        return {"ca-bundle": self.system_ca_bundle()}
