"""The boot pipeline: defaults -> user data (first boot only) -> generators -> one commit.

Like Bottlerocket's storewolf, early-boot-config and sundog, but in one atomic commit: invalid
user data fails the boot naming the file and key, and nothing of it is applied.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hostcore.documents import load_document, settings_of
from hostcore.keys import flatten, unflatten
from reconciler.generators import generate
from reconciler.schema import InvalidSettings, Schema
from reconciler.store import CommitResult, NothingToCommit, Store
from reconciler.transaction import DEFAULT_SOURCE, ROOT, apply_changes

BOOT_TX = "boot"
USER_DATA_MARKER = "user-data-applied"


@dataclass(frozen=True)
class BootResult:
    commit: CommitResult | None
    user_data: tuple[str, ...]  # files applied in this boot
    user_data_ignored: tuple[str, ...]  # files given but not applied (not the first boot)


def missing_defaults(schema: Schema, live: dict[str, Any]) -> dict[str, Any]:
    """Defaults whose key is absent from live (new defaults reach existing hosts)."""
    defaults = flatten({ROOT: schema.defaults()})
    return unflatten({k: v for k, v in defaults.items() if k not in live}, strip=1)


def boot(store: Store, schema: Schema, user_data: Sequence[str | Path] = ()) -> BootResult:
    store.discard_all()  # transactions do not survive a reboot, as in Bottlerocket
    live = store.live()
    defaults = missing_defaults(schema, live)
    if defaults:
        store.add_patch(BOOT_TX, defaults, DEFAULT_SOURCE)

    first_boot = store.get_meta(USER_DATA_MARKER) is None
    applied: list[str] = []
    if first_boot:
        for path in user_data:
            origin = str(path)
            body = settings_of(load_document(path), origin)
            try:
                store.add_patch(BOOT_TX, body, "user-data", schema)
            except InvalidSettings as error:
                store.discard(BOOT_TX)
                raise InvalidSettings(error.problems, origin=origin) from None
            applied.append(origin)

    preview = store.preview(BOOT_TX, schema) if store.pending(BOOT_TX) else None
    after = apply_changes(live, preview.changes) if preview else dict(live)
    generated = generate(schema.variant, after)
    if generated:
        store.add_patch(BOOT_TX, unflatten(generated, strip=1), "generator", schema)

    meta = {USER_DATA_MARKER: applied} if first_boot else None
    try:
        result = store.commit(BOOT_TX, schema, meta=meta)
    except NothingToCommit:
        result = None
        if meta:
            store.set_meta(USER_DATA_MARKER, applied)
    ignored = () if first_boot else tuple(str(p) for p in user_data)
    return BootResult(result, tuple(applied), ignored)
