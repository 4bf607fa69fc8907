"""A room's membership, stage layout and personal mixes (no I/O; the tick reads its scene).

Each member is both a *source* (their instrument, placed on the shared stage) and a *listener*
(their head sits where their instrument is, turned as they say). Both roles use the member's
slot: row ``l`` and column ``s`` of every per-pair array. Personal mixes override, for one
listener, a source's position, gain or mute; "reset" returns that source to the stage layout.

Everything the renderer needs is kept as slot-indexed NumPy arrays, updated in place by the
edits, so building a tick's :class:`~dsp.geometry.Scene` costs a few array operations and no
per-pair Python.

A *seat* (a token handed out on join) keeps its slot, participant id, place and mix while its
member is away, until a newcomer needs the slot. :meth:`Room.snapshot` copies what is worth
keeping (seats, stage places, facing, self-monitoring, personal mixes keyed by seat, the room's
acoustics as chosen; not head poses) and :meth:`Room.restore` puts a saved room back before
anyone joins: ``server.rooms.store`` does the I/O, the room only gives and takes plain data.

Coordinates follow SOFA: x ahead (towards the audience), y left, z up, metres; yaw 0° faces
+x, positive turns left.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass

import numpy as np

from dsp.geometry import EAR_HEIGHT_M, Scene, forward_vectors, yaw_pitch_roll_matrix
from hrtf.constants import FRAME_CHOICES_MS, FRAME_MS, SAMPLE_RATE
from signaling.metronome_messages import MetronomeState, key_name, key_parts
from signaling.recording_messages import RecordingNow
from signaling.render_messages import RoomAcoustics
from signaling.server_messages import Member as WireMember
from signaling.server_messages import Placement, RoomState

DEFAULT_CAPACITY = 16
#: New members are placed on a circle of this radius around the stage centre.
STAGE_RADIUS_M = 2.0
#: Personal gains are linear and capped (+12 dB).
MAX_PERSONAL_GAIN = 4.0
GOLDEN_ANGLE_DEG = 137.50776
#: The metronome's id as a source.
METRONOME_ID = "metronome"


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


@dataclass
class Seat:
    """What a seat token holds while its member is here and while they are away."""

    slot: int
    participant: str
    name: str
    instrument: str


@dataclass(frozen=True, slots=True)
class SavedSeat:
    """One seat as saved: who sat there, their slot, stage place (metres), facing (degrees)."""

    seat: str
    participant: str
    name: str
    instrument: str
    slot: int
    position_m: tuple[float, float, float]
    yaw_deg: float
    pitch_deg: float
    self_monitor: bool


@dataclass(frozen=True, slots=True)
class SavedMix:
    """One listener's personal setting for one source, both named by seat.

    ``position_m`` is the overriding place (metres), None when the stage's place applies;
    ``gain`` is linear.
    """

    listener_seat: str
    source_seat: str
    position_m: tuple[float, float, float] | None
    gain: float
    mute: bool


@dataclass(frozen=True, slots=True)
class SavedRoom:
    """A room's seats, personal mixes and chosen acoustics (``set_room_acoustics``' preset and
    values, JSON-able; None when never chosen) as plain records: what the store keeps."""

    name: str
    seats: tuple[SavedSeat, ...]
    mixes: tuple[SavedMix, ...]
    acoustics: dict | None = None
    metronome: dict | None = None
    #: The room's frame (ms) as its admin set it (``set_frame``); None: the server's default.
    frame_ms: float | None = None


@dataclass(frozen=True)
class RoomSnapshot:
    """Copies of a room's arrays and seats, taken on the loop in a few microseconds.

    :meth:`saved` turns them into records, off the loop (it walks the pairs that differ from
    the stage layout).
    """

    name: str
    #: ``(seat token, Seat)`` of every seat the room holds, present or away.
    seats: tuple[tuple[str, Seat], ...]
    position: np.ndarray
    facing: np.ndarray
    self_monitor: np.ndarray
    override_mask: np.ndarray
    override_position: np.ndarray
    personal_gain: np.ndarray
    personal_mute: np.ndarray
    acoustics: dict | None = None
    metronome: dict | None = None
    frame_ms: float | None = None

    def saved(self) -> SavedRoom:
        """The snapshot as records: every seat, and every personal setting between seats that
        differs from the stage layout (an override, a gain other than 1, a mute)."""
        seat_of = {info.slot: token for token, info in self.seats}
        seats = tuple(
            SavedSeat(token, info.participant, info.name, info.instrument, info.slot,
                      tuple(float(v) for v in self.position[info.slot]),
                      float(self.facing[info.slot, 0]), float(self.facing[info.slot, 1]),
                      bool(self.self_monitor[info.slot]))
            for token, info in sorted(self.seats, key=lambda item: item[1].slot))
        seated = np.zeros(len(self.position), np.bool_)
        seated[list(seat_of)] = True
        personal = self.override_mask | self.personal_mute | (self.personal_gain != 1.0)
        personal &= seated[:, None] & seated[None, :]
        mixes = tuple(
            SavedMix(seat_of[l], seat_of[s],
                     tuple(float(v) for v in self.override_position[l, s])
                     if self.override_mask[l, s] else None,
                     float(self.personal_gain[l, s]), bool(self.personal_mute[l, s]))
            for l, s in zip(*np.nonzero(personal), strict=True))
        return SavedRoom(self.name, seats, mixes, self.acoustics, self.metronome,
                         self.frame_ms)


def _build_scene(active, is_ai, is_metronome, hears_stage_metronome, listen_only, personal_mute,
                 self_monitor, personal_gain, override_mask, override_position, position, facing,
                 head, *, rotation: bool) -> Scene:
    """The renderer's scene from :meth:`Room._scene_inputs` (copies, owned by the scene):
    ``head`` is each listener's yaw, pitch and roll, or (``rotation``) their rotation matrices."""
    c = len(active)
    listening = active & ~is_ai
    sounding = active & ~listen_only
    heard = listening[:, None] & sounding[None, :] & ~personal_mute
    own = np.eye(c, dtype=np.bool_) & ~self_monitor[:, None]
    gain = np.where(heard & ~own, personal_gain, 0.0)
    # The metronome's place on the stage is heard only by those who chose to hear it there.
    gain[:, is_metronome] *= hears_stage_metronome[:, None]
    positions = np.where(override_mask[..., None], override_position, position[None, :, :])
    forward = forward_vectors(facing[:, 0], facing[:, 1])
    scene = Scene.create(position.copy(), positions, pair_gain=gain, source_forward=forward)
    scene.listener_rotation = head.copy() if rotation else yaw_pitch_roll_matrix(*head.T)
    return scene


def saved_frame(frame_ms) -> float | None:
    """A saved frame (ms) as the room keeps it, or None when absent or not a frame a room
    may tick at."""
    if isinstance(frame_ms, bool) or not isinstance(frame_ms, int | float):
        return None
    return float(frame_ms) if float(frame_ms) in FRAME_CHOICES_MS else None


def saved_metronome(settings) -> dict | None:
    """Saved metronome settings as the room keeps them, or None when absent or not usable."""
    if not isinstance(settings, dict):
        return None
    try:
        on, accent = settings["on"], settings["accent"]
        bpm, beats, count_in = (float(settings["bpm"]), int(settings["beats_per_bar"]),
                                int(settings["count_in_bars"]))
    except (KeyError, TypeError, ValueError):
        return None
    if not (isinstance(on, bool) and isinstance(accent, bool) and 30.0 <= bpm <= 300.0
            and 1 <= beats <= 16 and 0 <= count_in <= 4):
        return None
    key = settings.get("key")
    parts = key_parts(key) if isinstance(key, str) else None
    return {"on": on, "bpm": bpm, "beats_per_bar": beats, "accent": accent,
            "count_in_bars": count_in, "key": key_name(*parts) if parts else None}


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

    def __init__(self, name: str, capacity: int = DEFAULT_CAPACITY,
                 frame_ms: float = FRAME_MS) -> None:
        self.name = name
        self.capacity = capacity
        #: The room's frame (ms, one of ``FRAME_CHOICES_MS``): its clock ticks at it.
        self.frame_ms = float(frame_ms)
        #: Whether the room's admin chose its frame (``set_frame``): kept with the room, where
        #: a frame taken from the server's default is not.
        self.frame_chosen = False
        c = capacity
        self.members: dict[str, Member] = {}
        #: Seat tokens handed out, present or away: a seat keeps its slot and id across rejoins.
        self._seats: dict[str, Seat] = {}
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
        #: Slots held by an AI musician, or by the metronome: a source, never a listener.
        self.is_ai = np.zeros(c, np.bool_)
        #: The metronome's slot (an ``is_ai`` source on the stage, id ``metronome``), and the
        #: listeners who hear it from there (``hear_metronome`` ``stage``; the others hear it
        #: centred, or not at all, outside the scene).
        self.is_metronome = np.zeros(c, np.bool_)
        self.hears_stage_metronome = np.zeros(c, np.bool_)
        #: The metronome an admin set (``set_metronome``: on, bpm, beats_per_bar, accent,
        #: count_in_bars; kept with the room), and the room sample of its beat zero.
        self.metronome_settings: dict | None = None
        self.metronome_origin = 0
        #: Slots of members without the ``publish`` grant: they listen, nobody hears them.
        self.listen_only = np.zeros(c, np.bool_)
        #: Slots whose member muted themselves (``mute_self``): the tick silences their sound
        #: before anything hears it (mixes, the AI's ears, recordings).
        self.muted = np.zeros(c, np.bool_)
        self._scene_cache: tuple[tuple[np.ndarray, ...], Scene] | None = None
        #: Locked by an admin: only seats held here (and admins) may join.
        self.locked = False
        #: The acoustics an admin chose (``set_room_acoustics``' preset and values; kept with
        #: the room), and the room's acoustics as the renderer has them (``RoomModel.describe()``;
        #: None: dry). Set by ``server.rooms.rendering``.
        self.acoustics_settings: dict | None = None
        self.acoustics: dict | None = None
        #: The recording under way, shown in ``room_state`` (set by ``server.recording.control``).
        self.recording: RecordingNow | None = None
        #: Bumped on every change members should hear about (layout, membership).
        self.version = 0
        self._fresh_slots: list[int] = []

    # membership -------------------------------------------------------------------------

    def add_ai(self, label: str) -> Member:
        """Add an AI musician: a source on the stage with an ``ai-…`` id, and no ears."""
        member = self.join("AI", label)
        del self.members[member.id]
        del self._seats[member.seat]  # no seat to come back to
        member.id = f"ai-{secrets.token_hex(3)}"
        self.members[member.id] = member
        self.is_ai[member.slot] = True
        self.version += 1  # (a recording's take, on the clock's thread, re-reads who is AI)
        return member

    @property
    def ai_members(self) -> list[Member]:
        return [m for m in self.members.values()
                if self.is_ai[m.slot] and not self.is_metronome[m.slot]]

    def add_metronome(self) -> Member:
        """The metronome as a source on the stage (id ``metronome``, no ears), if not there."""
        if METRONOME_ID in self.members:
            return self.members[METRONOME_ID]
        member = self.add_ai("Metronome")
        del self.members[member.id]
        member.id, member.name = METRONOME_ID, "Metronome"
        self.members[member.id] = member
        self.is_metronome[member.slot] = True
        self.version += 1
        return member

    def join(self, name: str, instrument: str = "", seat: str | None = None) -> Member:
        """Add a member; ``seat`` from an earlier join takes the same slot back if free.

        A newcomer takes a free slot that no away member's seat holds, while there is one;
        only then is an away member's seat given up (and its place and mix with it).
        """
        held = self._seats.get(seat) if seat else None
        if held is None or self.active[held.slot]:
            free = np.flatnonzero(~self.active)
            if len(free) == 0:
                raise RoomFull(f"room {self.name!r} is full ({self.capacity} members)")
            seated = np.zeros(self.capacity, np.bool_)
            seated[[info.slot for info in self._seats.values()]] = True
            unseated = free[~seated[free]]
            slot = int(unseated[0] if len(unseated) else free[0])
            seat = secrets.token_urlsafe(12)
            self._reset_slot(slot)
            held = self._seats[seat] = Seat(slot, secrets.token_hex(4), name, instrument)
        held.name, held.instrument = name, instrument
        slot = held.slot
        member = Member(id=held.participant, name=name, instrument=instrument, slot=slot,
                        seat=seat)
        self.members[member.id] = member
        self.active[slot] = True
        self._fresh_slots.append(slot)
        self.version += 1
        return member

    def has_seat(self, seat: str | None) -> bool:
        """Whether ``seat`` was handed out here and is still kept."""
        return seat is not None and seat in self._seats

    def set_listen_only(self, member_id: str, listen_only: bool) -> None:
        self.listen_only[self.member(member_id).slot] = listen_only

    def seat_holder(self, seat: str | None) -> str | None:
        """The member now in ``seat``, if it is taken."""
        held = self._seats.get(seat) if seat else None
        if held is None or not self.active[held.slot]:
            return None
        return next((m.id for m in self.members.values() if m.slot == held.slot), None)

    def leave(self, member_id: str) -> Member:
        member = self.member(member_id)
        del self.members[member_id]
        self.active[member.slot] = False
        self.is_ai[member.slot] = False
        self.is_metronome[member.slot] = False
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
        for seat in [s for s, info in self._seats.items() if info.slot == slot]:
            del self._seats[seat]
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
        self.listen_only[slot] = False
        self.muted[slot] = False
        self.hears_stage_metronome[slot] = False

    # saving and restoring -------------------------------------------------------------------

    def snapshot(self) -> RoomSnapshot:
        """Copies of what is worth keeping (not head poses): cheap enough for the loop."""
        return RoomSnapshot(
            name=self.name,
            seats=tuple((token, Seat(info.slot, info.participant, info.name, info.instrument))
                        for token, info in self._seats.items()),
            position=self.position.copy(), facing=self.facing.copy(),
            self_monitor=self.self_monitor.copy(), override_mask=self.override_mask.copy(),
            override_position=self.override_position.copy(),
            personal_gain=self.personal_gain.copy(), personal_mute=self.personal_mute.copy(),
            acoustics=self.acoustics_settings,
            metronome=dict(self.metronome_settings) if self.metronome_settings else None,
            frame_ms=self.frame_ms if self.frame_chosen else None)

    def restore(self, saved: SavedRoom) -> list[str]:
        """Put saved seats and personal mixes back into this room before anyone has joined.

        Each seat waits, away, in its slot with its participant id, place, facing and
        self-monitoring: the member who comes back with the seat token takes them up, and
        until then the seat is not on the stage. A personal setting is restored when both of
        its seats are; it is heard once both members are here.

        Returns
        -------
        list of str
            Why records were left out (a slot beyond this room's capacity, a slot or
            participant id claimed twice, a setting naming an unknown seat): for a log line.

        Raises
        ------
        ValueError
            If the room has members or seats already (restore only a fresh room).
        """
        if self._seats or self.members:
            raise ValueError(f"room {self.name!r} has seats already: restore a fresh room only")
        skipped = []
        ids: set[str] = set()
        slots: set[int] = set()
        for seat in saved.seats:
            if not 0 <= seat.slot < self.capacity:
                skipped.append(f"seat in slot {seat.slot} (capacity {self.capacity})")
                continue
            if seat.slot in slots or seat.participant in ids:
                skipped.append(f"seat claiming slot {seat.slot} or id {seat.participant} again")
                continue
            ids.add(seat.participant)
            slots.add(seat.slot)
            self._seats[seat.seat] = Seat(seat.slot, seat.participant, seat.name, seat.instrument)
            self.position[seat.slot] = seat.position_m
            self.facing[seat.slot] = (seat.yaw_deg, seat.pitch_deg)
            self.head[seat.slot] = (seat.yaw_deg, 0.0, 0.0)
            self.self_monitor[seat.slot] = seat.self_monitor
        for mix in saved.mixes:
            listener, source = self._seats.get(mix.listener_seat), self._seats.get(mix.source_seat)
            if listener is None or source is None:
                skipped.append("personal setting of a seat not restored")
                continue
            l, s = listener.slot, source.slot
            if mix.position_m is not None:
                self.override_position[l, s] = mix.position_m
                self.override_mask[l, s] = True
            self.personal_gain[l, s] = min(max(mix.gain, 0.0), MAX_PERSONAL_GAIN)
            self.personal_mute[l, s] = mix.mute
        self.acoustics_settings = saved.acoustics
        self.metronome_settings = saved_metronome(saved.metronome)
        if (frame_ms := saved_frame(saved.frame_ms)) is not None:
            self.frame_ms, self.frame_chosen = frame_ms, True
        return skipped

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

    def set_muted(self, member_id: str, muted: bool) -> None:
        """Mute (or unmute) a member's sound for everyone (shown in ``room_state``)."""
        self.muted[self.member(member_id).slot] = muted
        self.version += 1

    def set_self_monitor(self, listener_id: str, on: bool) -> None:
        self.self_monitor[self.member(listener_id).slot] = on

    # the tick's view ------------------------------------------------------------------------

    def _scene_inputs(self) -> tuple[np.ndarray, ...]:
        """The arrays :meth:`scene` is made of."""
        return (self.active, self.is_ai, self.is_metronome, self.hears_stage_metronome,
                self.listen_only, self.personal_mute, self.self_monitor,
                self.personal_gain, self.override_mask, self.override_position, self.position,
                self.facing, self.head if self.head_rotation is None else self.head_rotation)

    def scene(self) -> Scene:
        """The renderer's scene for this tick: slot-indexed, absent slots silent.

        The same object as the last call while nothing it is made of has changed (a tick
        compares a few small arrays instead of building it again, and the renderer skips its
        filter look-up): read it, never write it.
        """
        inputs = self._scene_inputs()
        if self._scene_cache is not None:
            seen, scene = self._scene_cache
            if all(a.shape == b.shape and np.array_equal(a, b)
                   for a, b in zip(seen, inputs, strict=True)):
                return scene
        self._scene_cache = self._fresh_scene()
        return self._scene_cache[1]

    def _fresh_scene(self) -> tuple[tuple[np.ndarray, ...], Scene]:
        """The scene built anew, and the copies of its inputs it was built from: taken first,
        because the clock's thread calls this while the loop edits the room, and the cache
        must hold the inputs its scene describes."""
        copies = tuple(a.copy() for a in self._scene_inputs())
        return copies, _build_scene(*copies, rotation=copies[-1].ndim == 3)

    def describe(self) -> RoomState:
        """The shared room state, as broadcast to members."""
        members = sorted(self.members.values(), key=lambda m: m.slot)
        return RoomState(
            room=self.name,
            revision=self.version,
            members=tuple(WireMember(id=m.id, name=m.name, instrument=m.instrument,
                                     muted=bool(self.muted[m.slot]),
                                     ai=bool(self.is_ai[m.slot]
                                             and not self.is_metronome[m.slot]))
                          for m in members),
            stage=tuple(
                Placement(source=m.id, label=m.instrument or m.name,
                          position_m=tuple(round(float(v), 4) for v in self.position[m.slot]),
                          yaw_deg=round(float(self.facing[m.slot, 0]), 3),
                          pitch_deg=round(float(self.facing[m.slot, 1]), 3))
                for m in members),
            locked=self.locked,
            acoustics=(RoomAcoustics.from_description(self.acoustics)
                       if self.acoustics is not None else None),
            recording=self.recording,
            frame_ms=self.frame_ms,
            metronome=self.metronome_state(),
        )

    def metronome_state(self) -> MetronomeState | None:
        """The metronome as ``room_state`` shows it (None: never set here)."""
        m = self.metronome_settings
        if m is None:
            return None
        return MetronomeState(on=bool(m["on"]), bpm=float(m["bpm"]),
                              beats_per_bar=int(m["beats_per_bar"]), accent=bool(m["accent"]),
                              count_in_bars=int(m["count_in_bars"]),
                              beat_zero_s=round(self.metronome_origin / SAMPLE_RATE, 6),
                              key=m.get("key"))
