"""The web client through what ``make serve`` runs by default: a front and two workers
(``serve --workers 2``). Its own module: the browser suite's pages (a module fixture) hold the
Playwright driver while they are open."""

from __future__ import annotations

from bench.serverproc import ServerProcess
from tests.helpers.browser import (
    drag,
    open_jam,
    place_b_at_the_centre_facing_front,
    settle_ild,
    wait_for_stage_position,
)


def test_through_the_front_of_two_workers_the_page_plays_as_on_one_process(tmp_path):
    """What ``make serve`` runs by default: signaling relayed by the front, the media straight
    to the room's worker; B hears A on the side A is dragged to."""
    with ServerProcess("--workers", "2") as server, open_jam(server.http, tmp_path) as two:
        place_b_at_the_centre_facing_front(two)
        drag(two.b, two.a_id, (0.0, 2.0))
        wait_for_stage_position(two.a, two.a_id, (0.0, 2.0))
        left, levels = settle_ild(two.b, lambda ild: ild >= 6.0)
        assert levels["left_db"] > -50, f"B does not hear A's tone: {levels}"
        assert left >= 6.0, f"A at B's left, yet L−R = {left:.1f} dB ({levels})"
