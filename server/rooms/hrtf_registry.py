"""Uploaded HRTF sets kept by content, within a count and a memory budget, and the order they
go in: least recently used first, never while a listener hears through one.

:class:`HrtfRegistry` is a pure core (no I/O, no clock): :mod:`server.rooms.hrtf_uploads`
reserves room for a set before reading it into memory and adds it after;
:mod:`server.rooms.rendering` marks which sets listeners use.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from dataclasses import dataclass

from hrtf.hrirset import HrirSet
from signaling.limits import HRTF_UPLOADS_BUDGET_BYTES, MAX_HRTF_SET_BYTES

log = logging.getLogger(__name__)

#: Uploaded sets the registry keeps; past it the least recently used one that no listener
#: uses is forgotten.
REGISTRY_SIZE = 32
MIB = 2**20


class OverBudget(Exception):
    """A set the registry cannot make room for; the message says why, for people."""


@dataclass(frozen=True)
class UploadedSet:
    """An uploaded HRTF set, the file name it first came under, and the bytes it counts against
    the registry's budget (0 for a set the operator chose, which the budget does not cover)."""

    hrirs: HrirSet
    name: str
    nbytes: int = 0

    @property
    def digest(self) -> str:
        return self.hrirs.digest


class HrtfRegistry:
    """Uploaded sets by digest, least recently used first, at most ``capacity`` of them unless
    listeners use more, within a memory budget (a set in use is never forgotten).

    An uploaded set comes in two steps, both on the event loop: :meth:`reserve` its size before
    reading it (making room, or refusing), then :meth:`add` it with that reservation (or
    :meth:`cancel` the reservation if it could not be read).

    Parameters
    ----------
    capacity : int
        Sets kept that no listener uses.
    set_budget_bytes : int
        Most bytes one uploaded set may hold.
    budget_bytes : int
        Most bytes all uploaded sets kept, and those reserved, may hold together.
    """

    def __init__(self, capacity: int = REGISTRY_SIZE, *,
                 set_budget_bytes: int = MAX_HRTF_SET_BYTES,
                 budget_bytes: int = HRTF_UPLOADS_BUDGET_BYTES) -> None:
        if not 0 < set_budget_bytes <= budget_bytes:
            raise ValueError(f"the per-set budget ({set_budget_bytes} bytes) must be positive "
                             f"and within the total ({budget_bytes} bytes)")
        self.capacity = capacity
        self.set_budget_bytes = set_budget_bytes
        self.budget_bytes = budget_bytes
        self._sets: OrderedDict[str, UploadedSet] = OrderedDict()
        self._users: Counter[str] = Counter()
        self._reserved = 0

    @property
    def held_bytes(self) -> int:
        """Bytes counted against the budget: the sets kept and the reservations."""
        return sum(entry.nbytes for entry in self._sets.values()) + self._reserved

    def reserve(self, nbytes: int, name: str) -> None:
        """Make room for a set of ``nbytes`` about to be read: forget sets that no listener
        uses, least recently used first, until it fits within the budget.

        Raises
        ------
        OverBudget
            The set alone is over the per-set budget, or it would not fit even with every
            unused set forgotten (then none is).
        """
        if nbytes > self.set_budget_bytes:
            raise OverBudget(f"{name!r} would take {nbytes / MIB:.0f} MB of the server's memory; "
                             f"it takes sets of up to {self.set_budget_bytes / MIB:.0f} MB")
        unused = [entry for digest, entry in self._sets.items()
                  if not self._users[digest] and entry.nbytes]
        excess = self.held_bytes + nbytes - self.budget_bytes
        if excess > sum(entry.nbytes for entry in unused):
            in_use = self.held_bytes - self._reserved - sum(entry.nbytes for entry in unused)
            raise OverBudget(
                f"{name!r} needs {nbytes / MIB:.0f} MB, and the server's "
                f"{self.budget_bytes / MIB:.0f} MB for uploaded HRTF sets hold "
                f"{in_use / MIB:.0f} MB of sets listeners are using now"
                + (f" and {self._reserved / MIB:.0f} MB arriving" if self._reserved else "")
                + ": try again when fewer uploaded sets are in use, or upload a smaller set")
        for entry in unused:
            if excess <= 0:
                break
            excess -= entry.nbytes
            del self._sets[entry.digest]
            log.info("HRTF set %s… (%.0f MB) forgotten to make room for %r", entry.digest[:12],
                     entry.nbytes / MIB, name)
        self._reserved += nbytes

    def cancel(self, nbytes: int) -> None:
        """A reservation of ``nbytes`` that will not be added: give its room back."""
        self._reserved -= nbytes

    def __len__(self) -> int:
        return len(self._sets)

    def __contains__(self, digest: str) -> bool:
        return digest in self._sets

    def add(self, hrirs: HrirSet, name: str, reserved: int = 0) -> UploadedSet:
        """Keep ``hrirs`` (the entry already kept for its digest, if any: same content, same
        set), as the most recently used; ``reserved`` bytes (:meth:`reserve`) it now counts."""
        self._reserved -= reserved
        entry = self._sets.get(hrirs.digest) or UploadedSet(hrirs, name, reserved)
        self._sets[entry.digest] = entry
        self._sets.move_to_end(entry.digest)
        self._forget_unused()
        return entry

    def get(self, digest: str) -> UploadedSet | None:
        """The set of ``digest`` (now the most recently used), or None."""
        entry = self._sets.get(digest)
        if entry is not None:
            self._sets.move_to_end(digest)
        return entry

    def use(self, digest: str) -> None:
        """A listener now hears through this set: it stays while they do."""
        self._users[digest] += 1

    def release(self, digest: str) -> None:
        """A listener no longer hears through this set."""
        self._users[digest] -= 1
        if self._users[digest] <= 0:
            del self._users[digest]
            self._forget_unused()

    def _forget_unused(self) -> None:
        excess = len(self._sets) - self.capacity
        for digest in [d for d in self._sets if not self._users[d]][:max(0, excess)]:
            del self._sets[digest]
            log.info("HRTF set %s… forgotten (the %d kept are used more recently)", digest[:12],
                     self.capacity)
