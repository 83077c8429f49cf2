"""Errors of the update client, one class per attack or failure a user must tell apart.

python-tuf reports *what* check failed; these classes say *which attack* that check
stopped, so `updog` can print an actionable message. `classify()` does the mapping.
"""

from __future__ import annotations

import re

from tuf.api import exceptions as tuf_exc


class UpdateError(Exception):
    """Base class of every error `updates` raises on purpose."""

    kind = "update error"

    def __str__(self) -> str:
        return f"{self.kind}: {super().__str__()}"


class RepositoryUnavailableError(UpdateError):
    """The repository could not be reached or answered with an HTTP error."""

    kind = "repository unavailable"


class LockedError(UpdateError):
    """Another updater holds the metadata cache."""

    kind = "locked"


class TargetNotFoundError(UpdateError):
    """The signed metadata lists no target of that name."""

    kind = "target not found"


class MetadataError(UpdateError):
    """Metadata is malformed or otherwise refused (no specific attack recognised)."""

    kind = "invalid metadata"


class SignatureError(MetadataError):
    """Metadata is not signed by a threshold of the keys this host trusts.

    Either someone is serving arbitrary metadata, or keys were rotated in a root this host
    cannot reach (a client stuck on an old root).
    """

    kind = "untrusted signature"


class RollbackError(MetadataError):
    """The repository offered metadata older than what this host already trusts."""

    kind = "rollback attack"


class FreezeError(MetadataError):
    """Metadata has expired: the repository is frozen (or this host's clock is wrong)."""

    kind = "freeze attack"


class MixAndMatchError(MetadataError):
    """Metadata does not match the version, length or hashes its parent role signed."""

    kind = "mix-and-match attack"


class EndlessDataError(UpdateError):
    """The server sent more bytes than the signed (or configured maximum) length."""

    kind = "endless data attack"


class SlowRetrievalError(UpdateError):
    """The server stopped sending data."""

    kind = "slow retrieval attack"


class TamperedTargetError(UpdateError):
    """A target's content does not match its signed length and hashes."""

    kind = "tampered target"


_META_ROLLBACK = re.compile(r"^Expected \S+\.json version")


def classify(exc: BaseException, where: str = "metadata") -> UpdateError:
    """Map a python-tuf (or I/O) exception raised while handling `where` to an UpdateError.

    `where` names the object in messages, e.g. "timestamp metadata" or "target root.img".
    """
    text = str(exc) or type(exc).__name__
    if isinstance(exc, UpdateError):
        return exc
    if isinstance(exc, tuf_exc.ExpiredMetadataError):
        return FreezeError(f"{where} has expired ({text}); refusing to use it")
    if isinstance(exc, tuf_exc.UnsignedMetadataError):
        return SignatureError(
            f"{where} is not signed by a threshold of trusted keys ({text}): arbitrary "
            "metadata, or keys rotated in a root this host cannot reach"
        )
    if isinstance(exc, tuf_exc.BadVersionNumberError):
        if "must be >=" in text or _META_ROLLBACK.match(text):
            return RollbackError(f"{where} is older than the trusted copy ({text})")
        return MixAndMatchError(f"{where} has a version its parent role did not sign ({text})")
    if isinstance(exc, tuf_exc.LengthOrHashMismatchError):
        return MixAndMatchError(
            f"{where} does not match the length/hashes its parent role signed ({text})"
        )
    if isinstance(exc, tuf_exc.RepositoryError):
        if "missing info" in text:
            return RollbackError(f"{where} drops a role the trusted snapshot listed ({text})")
        return MetadataError(f"{where} refused: {text}")
    if isinstance(exc, tuf_exc.DownloadLengthMismatchError):
        return EndlessDataError(f"{where}: {text}")
    if isinstance(exc, tuf_exc.SlowRetrievalError):
        return SlowRetrievalError(f"{where}: download stalled ({text})")
    if isinstance(exc, tuf_exc.DownloadHTTPError):
        return RepositoryUnavailableError(f"{where}: HTTP {exc.status_code} ({text})")
    if isinstance(exc, tuf_exc.DownloadError):
        cause = exc.__cause__
        detail = f"{text}: {cause}" if cause else text
        return RepositoryUnavailableError(f"{where}: {detail}")
    if isinstance(exc, OSError):
        return UpdateError(f"local I/O error on {where}: {text}")
    return MetadataError(f"{where} refused: {text}")
