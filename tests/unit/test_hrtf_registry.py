"""The uploaded sets' registry (server.rooms.hrtf_registry): its memory budgets and the order
sets are forgotten in (issue 16). Sizes are given to :meth:`HrtfRegistry.reserve` as the child
reports them, so small real sets stand for large ones here."""

from __future__ import annotations

import pytest

from hrtf.library import load_hrtf
from server.rooms.hrtf_registry import HrtfRegistry, OverBudget

MB = 2**20


@pytest.fixture(scope="module")
def sets():
    return [load_hrtf(f"spherical-head:0.0{k}") for k in range(5, 10)]


def take(registry: HrtfRegistry, hrirs, name: str, nbytes: int):
    """An upload's two steps, as the upload shell takes them."""
    registry.reserve(nbytes, name)
    return registry.add(hrirs, name, nbytes)


def test_a_set_over_the_per_set_budget_is_refused_in_words(sets):
    registry = HrtfRegistry(set_budget_bytes=100 * MB, budget_bytes=300 * MB)
    with pytest.raises(OverBudget, match=r"^'big.sofa' would take 101 MB of the server's "
                                         r"memory; it takes sets of up to 100 MB$"):
        registry.reserve(101 * MB, "big.sofa")
    assert registry.held_bytes == 0


def test_the_least_recently_used_unused_set_is_forgotten_to_make_room(sets):
    registry = HrtfRegistry(set_budget_bytes=100 * MB, budget_bytes=250 * MB)
    a, b = take(registry, sets[0], "a", 100 * MB), take(registry, sets[1], "b", 100 * MB)
    assert registry.get(a.digest) is a  # a is now used more recently than b
    c = take(registry, sets[2], "c", 60 * MB)
    assert b.digest not in registry and {a.digest, c.digest} <= set(registry._sets)
    assert registry.held_bytes == 160 * MB


def test_only_as_many_sets_as_needed_are_forgotten(sets):
    registry = HrtfRegistry(set_budget_bytes=100 * MB, budget_bytes=200 * MB)
    small = [take(registry, s, f"s{k}", 50 * MB) for k, s in enumerate(sets[:4])]
    take(registry, sets[4], "big", 90 * MB)  # 290 MB: the two oldest go, 190 MB stay
    assert [s.digest in registry for s in small] == [False, False, True, True]


def test_a_set_in_use_is_never_forgotten_and_a_full_registry_refuses_in_words(sets):
    registry = HrtfRegistry(set_budget_bytes=100 * MB, budget_bytes=150 * MB)
    mine = take(registry, sets[0], "mine.sofa", 100 * MB)
    registry.use(mine.digest)
    with pytest.raises(OverBudget, match=r"^'next.sofa' needs 60 MB, and the server's 150 MB "
                                         r"for uploaded HRTF sets hold 100 MB of sets listeners "
                                         r"are using now: try again when fewer uploaded sets are "
                                         r"in use, or upload a smaller set$"):
        registry.reserve(60 * MB, "next.sofa")
    assert mine.digest in registry and registry.held_bytes == 100 * MB
    registry.release(mine.digest)  # no longer heard: the first to go
    take(registry, sets[1], "next.sofa", 60 * MB)
    assert mine.digest not in registry and registry.held_bytes == 60 * MB


def test_a_refusal_forgets_nothing(sets):
    registry = HrtfRegistry(set_budget_bytes=100 * MB, budget_bytes=150 * MB)
    used, unused = take(registry, sets[0], "used", 80 * MB), take(registry, sets[1], "u", 20 * MB)
    registry.use(used.digest)
    with pytest.raises(OverBudget):  # forgetting 'u' would not make room for 100 MB
        registry.reserve(100 * MB, "more")
    assert unused.digest in registry


def test_sets_on_their_way_count_against_the_budget(sets):
    registry = HrtfRegistry(set_budget_bytes=100 * MB, budget_bytes=150 * MB)
    registry.reserve(100 * MB, "first")  # being read
    with pytest.raises(OverBudget, match="and 100 MB arriving"):
        registry.reserve(60 * MB, "second")
    registry.cancel(100 * MB)  # the first could not be read
    registry.reserve(60 * MB, "second")
    assert registry.held_bytes == 60 * MB


def test_the_same_content_again_counts_once(sets):
    registry = HrtfRegistry(set_budget_bytes=100 * MB, budget_bytes=200 * MB)
    first = take(registry, sets[0], "first.sofa", 90 * MB)
    again = take(registry, sets[0], "again.sofa", 90 * MB)
    assert again is first and registry.held_bytes == 90 * MB


def test_a_set_the_operator_chose_is_outside_the_budget(kemar, sets):
    registry = HrtfRegistry(set_budget_bytes=100 * MB, budget_bytes=100 * MB)
    registry.add(kemar, kemar.name)  # as Renderings keeps a --hrtf FILE default
    registry.use(kemar.digest)
    take(registry, sets[0], "mine", 100 * MB)
    assert registry.held_bytes == 100 * MB and kemar.digest in registry


def test_a_per_set_budget_over_the_total_is_refused():
    with pytest.raises(ValueError, match="must be positive and within the total"):
        HrtfRegistry(set_budget_bytes=200 * MB, budget_bytes=100 * MB)
