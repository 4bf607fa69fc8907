"""Rooms set up for the tests of saving and restoring them (no I/O)."""

from __future__ import annotations

from server.rooms.room import Room


def a_band() -> tuple[Room, dict]:
    """Three members with stage places, facing, self-monitoring and personal settings, in a
    room whose admin set its frame to 5 ms."""
    room = Room("band", capacity=4)
    room.frame_ms, room.frame_chosen = 5.0, True
    a, b, c = room.join("Ann", "violin"), room.join("Bo", "drums"), room.join("Cy")
    room.move_source(a.id, (0.0, -2.0, 1.2))
    room.turn_source(b.id, -90.0, 10.0)
    room.set_override(b.id, a.id, position=(0.0, 2.0, 1.2), gain=0.5)
    room.set_override(b.id, c.id, mute=True)
    room.set_override(c.id, a.id, gain=2.0)
    room.set_self_monitor(a.id, True)
    room.set_head_pose(b.id, 45.0)  # transient: not kept
    return room, {"a": a, "b": b, "c": c}


def restored(room: Room) -> Room:
    fresh = Room(room.name, capacity=room.capacity)
    assert fresh.restore(room.snapshot().saved()) == []
    return fresh
