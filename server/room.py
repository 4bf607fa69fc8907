"""A room's membership, stage layout and personal mixes (no I/O; the tick reads its scene).

Each member is both a *source* (their instrument, placed on the shared stage) and a *listener*
(their head sits where their instrument is, turned as they say). Both roles use the member's
slot: row ``l`` and column ``s`` of every per-pair array. Personal mixes override, for one
listener, a source's position, gain or mute; "reset" returns that source to the stage layout.

Everything the renderer needs is kept as slot-indexed NumPy arrays, updated in place by the
edits, so building a tick's :class:`~dsp.geometry.Scene` costs a few array operations and no
per-pair Python.

Coordinates follow SOFA: x ahead (towards the audience), y left, z up, metres; yaw 0° faces
+x, positive turns left.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass

import numpy as np

from dsp.geometry import Scene, yaw_pitch_roll_matrix
from signaling.server_messages import Member as WireMember
from signaling.server_messages import Placement, RoomState

DEFAULT_CAPACITY = 16
#: New members are placed on a circle of this radius around the stage centre.
STAGE_RADIUS_M = 2.0
#: Where ears are: every default position is at this height.
EAR_HEIGHT_M = 1.2
#: Personal gains are linear and capped (+12 dB).
MAX_PERSONAL_GAIN = 4.0
GOLDEN_ANGLE_DEG = 137.50776


class RoomFull(Exception):
    """The room has no free slot."""


class UnknownMember(KeyError):
    """No member with this id is in the room."""


@dataclass
class Member:
    id: str
    name: str
    instrument: str
    slot: int
    seat: str


def default_position(slot: int) -> tuple[float, float, float]:
    """Slot ``k`` sits at the golden angle ``k · 137.5°`` on the stage circle."""
    angle = math.radians(slot * GOLDEN_ANGLE_DEG)
    return (STAGE_RADIUS_M * math.cos(angle), STAGE_RADIUS_M * math.sin(angle), EAR_HEIGHT_M)


def facing_centre_yaw_deg(position) -> float:
    return math.degrees(math.atan2(-position[1], -position[0]))


class Room:
    """Membership, layout and personal mixes of one room.

    Parameters
    ----------
    name : str
    capacity : int
        Slots, i.e. the most members at once (the renderer is sized to it).
    """

    def __init__(self, name: str, capacity: int = DEFAULT_CAPACITY) -> None:
        self.name = name
        self.capacity = capacity
        c = capacity
        self.members: dict[str, Member] = {}
        self._seats: dict[str, int] = {}
        self._seat_ids: dict[str, str] = {}  # a seat keeps its participant id across rejoins
        self.active = np.zeros(c, np.bool_)
        self.position = np.array([default_position(k) for k in range(c)], np.float64)
        self.facing = np.zeros((c, 2), np.float64)  # yaw, pitch of each source
        self.head = np.zeros((c, 3), np.float64)  # yaw, pitch, roll of each listener
        self.head_rotation: np.ndarray | None = None  # (c, 3, 3) when set by quaternions
        self.override_position = np.zeros((c, c, 3), np.float64)
        self.override_mask = np.zeros((c, c), np.bool_)
        self.personal_gain = np.ones((c, c), np.float64)
        self.personal_mute = np.zeros((c, c), np.bool_)
        self.self_monitor = np.zeros(c, np.bool_)
        #: Slots held by an AI musician: a source, never a listener.
        self.is_ai = np.zeros(c, np.bool_)
        #: Bumped on every change members should hear about (layout, membership).
        self.version = 0
        self._fresh_slots: list[int] = []

    # membership -------------------------------------------------------------------------

    def add_ai(self, label: str) -> Member:
        """Add an AI musician: a source on the stage with an ``ai-…`` id, and no ears."""
        member = self.join("AI", label)
        del self.members[member.id]
        self._seat_ids.pop(member.seat, None)
        self._seats.pop(member.seat, None)  # no seat to come back to
        member.id = f"ai-{secrets.token_hex(3)}"
        self.members[member.id] = member
        self.is_ai[member.slot] = True
        return member

    @property
    def ai_members(self) -> list[Member]:
        return [m for m in self.members.values() if self.is_ai[m.slot]]

    def join(self, name: str, instrument: str = "", seat: str | None = None) -> Member:
        """Add a member; ``seat`` from an earlier join takes the same slot back if free."""
        slot = self._seats.get(seat) if seat else None
        if slot is None or self.active[slot]:
            free = np.flatnonzero(~self.active)
            if len(free) == 0:
                raise RoomFull(f"room {self.name!r} is full ({self.capacity} members)")
            slot = int(free[0])
            seat = secrets.token_urlsafe(12)
            self._reset_slot(slot)
        member_id = self._seat_ids.get(seat) or secrets.token_hex(4)
        member = Member(id=member_id, name=name, instrument=instrument, slot=slot, seat=seat)
        self._seat_ids[seat] = member_id
        self._seats[seat] = slot
        self.members[member.id] = member
        self.active[slot] = True
        self._fresh_slots.append(slot)
        self.version += 1
        return member

    def seat_holder(self, seat: str | None) -> str | None:
        """The member now in ``seat``, if it is taken."""
        slot = self._seats.get(seat) if seat else None
        if slot is None or not self.active[slot]:
            return None
        return next((m.id for m in self.members.values() if m.slot == slot), None)

    def leave(self, member_id: str) -> Member:
        member = self.member(member_id)
        del self.members[member_id]
        self.active[member.slot] = False
        self.is_ai[member.slot] = False
        self.version += 1
        return member

    def member(self, member_id: str) -> Member:
        try:
            return self.members[member_id]
        except KeyError:
            raise UnknownMember(member_id) from None

    @property
    def empty(self) -> bool:
        """No human is here (an AI musician alone does not keep a room open)."""
        return all(self.is_ai[m.slot] for m in self.members.values())

    def drain_fresh_slots(self) -> list[int]:
        """Slots (re)occupied since the last call: the renderer resets them before a tick."""
        fresh, self._fresh_slots = self._fresh_slots, []
        return fresh

    def _reset_slot(self, slot: int) -> None:
        """A new occupant: default place, facing the centre, no personal settings."""
        for seat in [s for s, k in self._seats.items() if k == slot]:
            del self._seats[seat]
            self._seat_ids.pop(seat, None)
        self.position[slot] = default_position(slot)
        yaw = facing_centre_yaw_deg(self.position[slot])
        self.facing[slot] = (yaw, 0.0)
        self.head[slot] = (yaw, 0.0, 0.0)
        if self.head_rotation is not None:
            self.head_rotation[slot] = yaw_pitch_roll_matrix(yaw)
        for arr in (self.override_mask, self.personal_mute):
            arr[slot, :] = False
            arr[:, slot] = False
        self.personal_gain[slot, :] = 1.0
        self.personal_gain[:, slot] = 1.0
        self.self_monitor[slot] = False

    # stage edits (shared) -----------------------------------------------------------------

    def move_source(self, source_id: str, position) -> None:
        self.position[self.member(source_id).slot] = position
        self.version += 1

    def turn_source(self, source_id: str, yaw_deg: float, pitch_deg: float = 0.0) -> None:
        self.facing[self.member(source_id).slot] = (yaw_deg, pitch_deg)
        self.version += 1

    # the listener's own ---------------------------------------------------------------------

    def set_head_pose(self, listener_id: str, yaw_deg: float, pitch_deg: float = 0.0,
                      roll_deg: float = 0.0) -> None:
        slot = self.member(listener_id).slot
        self.head[slot] = (yaw_deg, pitch_deg, roll_deg)
        if self.head_rotation is not None:
            self.head_rotation[slot] = yaw_pitch_roll_matrix(yaw_deg, pitch_deg, roll_deg)

    def set_head_rotation(self, listener_id: str, rotation: np.ndarray) -> None:
        """Head pose as a rotation matrix (from a quaternion)."""
        slot = self.member(listener_id).slot
        if self.head_rotation is None:
            self.head_rotation = yaw_pitch_roll_matrix(*self.head.T)
        self.head_rotation[slot] = rotation

    def set_override(self, listener_id: str, source_id: str, *, position=None,
                     gain: float | None = None, mute: bool | None = None) -> None:
        l = self.member(listener_id).slot
        s = self.member(source_id).slot
        if position is not None:
            self.override_position[l, s] = position
            self.override_mask[l, s] = True
        if gain is not None:
            self.personal_gain[l, s] = min(max(gain, 0.0), MAX_PERSONAL_GAIN)
        if mute is not None:
            self.personal_mute[l, s] = mute

    def reset_override(self, listener_id: str, source_id: str | None = None) -> None:
        """Back to the stage layout for one source, or for all when ``source_id`` is None."""
        l = self.member(listener_id).slot
        cols = slice(None) if source_id is None else self.member(source_id).slot
        self.override_mask[l, cols] = False
        self.personal_gain[l, cols] = 1.0
        self.personal_mute[l, cols] = False

    def set_self_monitor(self, listener_id: str, on: bool) -> None:
        self.self_monitor[self.member(listener_id).slot] = on

    # the tick's view ------------------------------------------------------------------------

    def scene(self) -> Scene:
        """The renderer's scene for this tick: slot-indexed, absent slots silent."""
        c = self.capacity
        listening = self.active & ~self.is_ai
        heard = listening[:, None] & self.active[None, :] & ~self.personal_mute
        own = np.eye(c, dtype=np.bool_) & ~self.self_monitor[:, None]
        gain = np.where(heard & ~own, self.personal_gain, 0.0)
        positions = np.where(self.override_mask[..., None], self.override_position,
                             self.position[None, :, :])
        yaw, pitch = np.radians(self.facing[:, 0]), np.radians(self.facing[:, 1])
        forward = np.column_stack([np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw),
                                   np.sin(pitch)])
        # Copies: the tick renders on another thread while the loop keeps editing the room.
        scene = Scene.create(self.position.copy(), positions, pair_gain=gain,
                             source_forward=forward)
        scene.listener_rotation = (self.head_rotation.copy() if self.head_rotation is not None
                                   else yaw_pitch_roll_matrix(*self.head.T))
        return scene

    def describe(self) -> RoomState:
        """The shared room state, as broadcast to members."""
        members = sorted(self.members.values(), key=lambda m: m.slot)
        return RoomState(
            room=self.name,
            revision=self.version,
            members=tuple(WireMember(id=m.id, name=m.name, instrument=m.instrument)
                          for m in members),
            stage=tuple(
                Placement(source=m.id, label=m.instrument or m.name,
                          position_m=tuple(round(float(v), 4) for v in self.position[m.slot]),
                          yaw_deg=round(float(self.facing[m.slot, 0]), 3),
                          pitch_deg=round(float(self.facing[m.slot, 1]), 3))
                for m in members),
        )
