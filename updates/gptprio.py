"""Bottlerocket's gptprio flags and the A/B rules, as pure functions over plain data.

The flags live in a boot partition entry's 64-bit attribute field: bits 48-51 priority,
52-55 tries_left, 56 successful; every other bit is preserved.

* `signpost_next(a, b)`: which set signpost expects to boot next.
* `grub_select(flags)`: what GRUB's `gptprio.next` actually boots (table order, strictly higher
  priority wins, a try is used up).
* The signpost operations take and return a `Sets` value (flags of A and B plus which one is
  active) and raise `SignpostError` on a failed precondition.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

PRIORITY_SHIFT, TRIES_SHIFT, SUCCESSFUL_BIT = 48, 52, 56
_NIBBLE = 0xF


@dataclass(frozen=True)
class Flags:
    priority: int = 0
    tries_left: int = 0
    successful: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.priority <= 15 or not 0 <= self.tries_left <= 15:
            raise ValueError("priority and tries_left are 4-bit values (0..15)")

    def will_boot(self) -> bool:
        return (self.priority > 0 and self.tries_left > 0) or self.successful

    def describe(self) -> str:
        return (f"priority={self.priority} tries_left={self.tries_left} "
                f"successful={str(self.successful).lower()}")


def decode(attributes: int) -> Flags:
    return Flags((attributes >> PRIORITY_SHIFT) & _NIBBLE, (attributes >> TRIES_SHIFT) & _NIBBLE,
                 bool((attributes >> SUCCESSFUL_BIT) & 1))


def encode(attributes: int, flags: Flags) -> int:
    """`attributes` with the gptprio bits replaced by `flags` (other bits untouched)."""
    mask = (_NIBBLE << PRIORITY_SHIFT) | (_NIBBLE << TRIES_SHIFT) | (1 << SUCCESSFUL_BIT)
    return ((attributes & ~mask)
            | (flags.priority << PRIORITY_SHIFT)
            | (flags.tries_left << TRIES_SHIFT)
            | (int(flags.successful) << SUCCESSFUL_BIT))


def signpost_next(a: Flags, b: Flags) -> str | None:
    """signpost's view: both bootable -> A when prio_A >= prio_B; else the bootable one."""
    if a.will_boot() and b.will_boot():
        return "A" if a.priority >= b.priority else "B"
    if a.will_boot():
        return "A"
    if b.will_boot():
        return "B"
    return None


def grub_select(flags: Sequence[Flags]) -> tuple[int | None, list[Flags]]:
    """GRUB gptprio.next over boot entries in table order: (chosen index, flags after boot).

    Keeps the first entry with (tries_left > 0 or successful) whose priority is strictly greater
    than the best so far, starting from 0 (priority 0 never boots). The chosen entry loses a try.
    """
    best, best_prio = None, 0
    for i, f in enumerate(flags):
        if (f.tries_left > 0 or f.successful) and f.priority > best_prio:
            best, best_prio = i, f.priority
    after = list(flags)
    if best is not None and after[best].tries_left > 0:
        after[best] = replace(after[best], tries_left=after[best].tries_left - 1)
    return best, after


# ---------------------------------------------------------------------------- signpost ops


class SignpostError(Exception):
    """A signpost operation's precondition does not hold (exit 1 with this message)."""


class InactiveAlreadyMarked(SignpostError):
    pass


class InactiveNotValid(SignpostError):
    pass


class InactiveInvalidRollback(SignpostError):
    pass


@dataclass(frozen=True)
class Sets:
    """The flags of both sets and which one is running."""

    a: Flags
    b: Flags
    active: str  # "A" or "B"

    @property
    def inactive(self) -> str:
        return "B" if self.active == "A" else "A"

    def get(self, name: str) -> Flags:
        return self.a if name == "A" else self.b

    def put(self, name: str, flags: Flags) -> Sets:
        return replace(self, a=flags) if name == "A" else replace(self, b=flags)

    def next(self) -> str | None:
        return signpost_next(self.a, self.b)


def mark_successful_boot(s: Sets) -> Sets:
    return s.put(s.active, replace(s.get(s.active), successful=True))


def clear_inactive(s: Sets) -> Sets:
    return s.put(s.inactive, Flags(0, 0, False))


def mark_inactive_valid(s: Sets) -> Sets:
    return s.put(s.inactive, replace(s.get(s.inactive), tries_left=1))


def upgrade_to_inactive(s: Sets) -> Sets:
    inactive = s.get(s.inactive)
    if inactive.priority != 0 or inactive.successful:
        raise InactiveAlreadyMarked(
            f"Inactive partition set {s.inactive} is already marked for upgrade "
            f"({inactive.describe()})")
    if inactive.tries_left == 0:
        raise InactiveNotValid(
            f"Inactive partition set {s.inactive} has not been marked valid for upgrade")
    s = s.put(s.inactive, replace(inactive, priority=2, successful=False))
    return s.put(s.active, replace(s.get(s.active), priority=1))


def cancel_upgrade(s: Sets) -> Sets:
    s = s.put(s.inactive, replace(s.get(s.inactive), priority=0))
    return s.put(s.active, replace(s.get(s.active), priority=2))


def rollback_to_inactive(s: Sets) -> Sets:
    inactive = s.get(s.inactive)
    if not inactive.will_boot():
        raise InactiveInvalidRollback(
            f"Inactive partition set {s.inactive} is not valid to roll back to "
            f"({inactive.describe()})")
    s = s.put(s.inactive, replace(inactive, priority=2))
    return s.put(s.active, replace(s.get(s.active), priority=1))


def fallback_at_risk(s: Sets) -> bool:
    """Whether clearing the inactive set would leave no good set to boot.

    True while the running set is not (yet) marked successful and the inactive set would boot:
    if the running set never gets marked, the next boot falls back there, so an update must
    not overwrite it (Bottlerocket marks every boot at once; a health-gated boot waits).
    """
    return not s.get(s.active).successful and s.get(s.inactive).will_boot()


def has_boot_ever_succeeded(s: Sets) -> bool:
    return s.a.successful or s.b.successful


OPERATIONS = {
    "mark-successful-boot": mark_successful_boot,
    "clear-inactive": clear_inactive,
    "mark-inactive-valid": mark_inactive_valid,
    "upgrade-to-inactive": upgrade_to_inactive,
    "cancel-upgrade": cancel_upgrade,
    "rollback-to-inactive": rollback_to_inactive,
}


def next_two_boots(flags: Sequence[Flags]) -> tuple[int | None, int | None, int | None]:
    """(next boot, the boot after it if that one is marked successful, ... if it is not).

    What GRUB's gptprio rule would do over the boot entries `flags` (table order): the second
    boot depends on whether the first gets marked successful (fallback otherwise).
    """
    first, after = grub_select(flags)
    if first is None:
        return None, None, None
    marked = list(after)
    marked[first] = replace(marked[first], successful=True)
    return first, grub_select(marked)[0], grub_select(after)[0]
