"""What each listener hears through, and each room's acoustics: the shell between the rendering
messages (docs/PROTOCOL.md) and the renderer's ``configure_listener`` and ``set_room``.

A listener's settings (:class:`ListenerRendering`: HRTF set, room acoustics on or off for them,
the reference rendering without HRTF) live in memory with the connection only: each ``join``
starts from the server's defaults (``rendering``, sent right after ``joined``, says which), and
a client that rejoins sends its choice again (an uploaded set by its digest, for as long as the
server's :class:`~server.rooms.hrtf_registry.HrtfRegistry` keeps it). A room's acoustics are kept
with the room (``Room.acoustics_settings``, saved by :mod:`server.rooms.store`) and shown in
``room_state``.

Sets are loaded, their spectra computed and rooms built on worker threads before the renderer
is told: the tick that takes a change only switches to it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hrtf.constants import FRAME
from hrtf.errors import HrtfError
from hrtf.hrirset import HrirSet, fft_size
from hrtf.library import load_hrtf
from hrtf.panning import reference_set
from hrtf.spherical_head import DEFAULT_HEAD_RADIUS_M
from server.rooms.hrtf_registry import REGISTRY_SIZE, HrtfRegistry, UploadedSet
from signaling.errors import ErrorCode, MessageId
from signaling.render_messages import (
    ROOM_CHOICES,
    HrtfUploaded,
    Rendering,
    SetRendering,
    SetRoomAcoustics,
)
from signaling.server_messages import ErrorMessage

if TYPE_CHECKING:
    from dsp.room_model import RoomModel

log = logging.getLogger(__name__)

#: Spherical heads are made to the nearest half millimetre (the default, 8.75 cm, is one): a
#: slider makes one set per step.
HEAD_RADIUS_STEP_M = 0.0005
_ROOM_KEYS = ("dims_m", "rt60_s", "wet", "max_order")


class UnknownHrtf(Exception):
    """``sofa:<digest>`` names no set this server keeps; the message says what to do."""


@dataclass(frozen=True)
class ListenerRendering:
    """One listener's settings.

    ``hrtf`` as ``set_rendering`` names it (``kemar``, ``spherical-head``, ``sofa:<digest>``),
    ``hrtf_name`` for people, ``head_radius_m`` for the spherical head (else None); ``hrirs``
    the set itself, None for the renderer's default set.
    """

    hrtf: str
    hrtf_name: str
    head_radius_m: float | None = None
    acoustics: bool = True
    reference: bool = False
    hrirs: HrirSet | None = None

    @property
    def uploaded_digest(self) -> str | None:
        """The registry's digest when the set is an uploaded one."""
        return self.hrtf.removeprefix("sofa:") if self.hrtf.startswith("sofa:") else None

    def message(self, msg_id: MessageId | None = None) -> Rendering:
        return Rendering(hrtf=self.hrtf, hrtf_name=self.hrtf_name,
                         head_radius_m=self.head_radius_m, acoustics=self.acoustics,
                         reference=self.reference, msg_id=msg_id)


def default_rendering(spec: str, hrirs: HrirSet) -> ListenerRendering:
    """A new listener's settings on a server whose default set is ``hrirs``, named by
    ``serve --hrtf`` as ``spec`` (``kemar``, ``spherical-head[:RADIUS_M]`` or a file)."""
    if spec == "kemar":
        return ListenerRendering("kemar", hrirs.name)
    if spec == "spherical-head" or spec.startswith("spherical-head:"):
        radius = spec.partition(":")[2]
        return ListenerRendering("spherical-head", hrirs.name,
                                 float(radius) if radius else DEFAULT_HEAD_RADIUS_M)
    return ListenerRendering(f"sofa:{hrirs.digest}", hrirs.name)


def room_settings(message: SetRoomAcoustics) -> dict[str, Any]:
    """What a room keeps of ``set_room_acoustics`` (and saves): the preset and values given."""
    return {"preset": message.preset, **message.settings()}


def build_room(settings: dict[str, Any] | None) -> RoomModel | None:
    """The room model for kept settings (None or preset ``off``: no acoustics). Blocking.

    Raises
    ------
    ValueError
        Settings the room model refuses (its message says why), or not settings at all.
    """
    from dsp.room_model import room_model  # pyroomacoustics: loaded where rooms are made

    if settings is None:
        return None
    preset = settings.get("preset")
    if not isinstance(preset, str) or preset not in ROOM_CHOICES:
        raise ValueError(f"room acoustics {settings!r} name no preset of {ROOM_CHOICES}")
    unknown = set(settings) - {"preset", *_ROOM_KEYS}
    if unknown:
        raise ValueError(f"room acoustics have unknown settings {sorted(unknown)}")
    if preset == "off":
        return None
    values = {key: settings[key] for key in _ROOM_KEYS if settings.get(key) is not None}
    return room_model(None if preset == "custom" else preset, **values)


def _warm(hrirs: HrirSet, reference: bool, frame: int = FRAME) -> None:
    """Compute what a renderer of ``frame``-sample ticks will ask of this set (blocking; on a
    worker thread): its spectra at that frame's FFT size, not on the room's clock."""
    hrirs.spectra(fft_size(hrirs.taps, frame))
    if reference:
        ref = reference_set(hrirs)
        ref.spectra(fft_size(ref.taps, frame))


def _frame_of(p) -> int:
    """The frame (samples) of the room ``p`` is in, the default when none."""
    live = p.live
    return live.runner.frame if live is not None else FRAME


class Renderings:
    """Every listener's settings and every room's acoustics on this server.

    The hub's participants carry their settings as ``p.rendering``; ``p.live`` (its
    ``runner`` and ``room``), ``p.member_id``, ``p.session`` and ``p.flush()`` are used here.

    Parameters
    ----------
    default_spec : str
        ``serve --hrtf``: what the server's default set is called.
    default_set : HrirSet
        The rooms' renderers' default set.
    registry : HrtfRegistry
        Uploaded sets (a default set from a file is kept there too, for good).
    default_acoustics : str
        ``serve --acoustics``: a preset for rooms that have none saved, or ``off``.
    """

    def __init__(self, default_spec: str, default_set: HrirSet,
                 registry: HrtfRegistry | None = None, default_acoustics: str = "off") -> None:
        self.registry = registry if registry is not None else HrtfRegistry(REGISTRY_SIZE)
        self.default_set = default_set
        self.default = default_rendering(default_spec, default_set)
        if self.default.uploaded_digest is not None:  # chosen again by digest; never forgotten
            self.registry.add(default_set, default_set.name)
            self.registry.use(default_set.digest)
        self.default_acoustics = {"preset": default_acoustics}
        self._locks: weakref.WeakKeyDictionary[Any, asyncio.Lock] = weakref.WeakKeyDictionary()

    def _lock(self, owner: Any) -> asyncio.Lock:
        return self._locks.setdefault(owner, asyncio.Lock())

    # listeners ---------------------------------------------------------------------------------

    def joined(self, p) -> None:
        """``p`` joined: the server's defaults (its slot's were reset), told with ``rendering``."""
        self.left(p)
        p.rendering = self.default
        p.session.send(self.default.message())

    def left(self, p) -> None:
        """``p`` left its room: its settings go (its slot is reset for the next listener)."""
        rendering = getattr(p, "rendering", None)
        if rendering is not None and rendering.uploaded_digest is not None:
            self.registry.release(rendering.uploaded_digest)
        p.rendering = None

    async def set(self, p, message: SetRendering) -> None:
        """Apply ``set_rendering``; answer ``rendering``, or an error naming what was wrong."""
        async with self._lock(p):
            current = p.rendering
            if current is None:
                return
            try:
                chosen = (await self._resolve(message.hrtf, message.head_radius_m)
                          if message.hrtf is not None else current)
            except UnknownHrtf as exc:
                p.session.send(ErrorMessage(ErrorCode.UNKNOWN_HRTF, str(exc), message.msg_id))
                return
            except HrtfError as exc:
                p.session.send(ErrorMessage(ErrorCode.BAD_VALUE, str(exc), message.msg_id))
                return
            new = dataclasses.replace(
                chosen,
                acoustics=current.acoustics if message.acoustics is None else message.acoustics,
                reference=current.reference if message.reference is None else message.reference)
            await self._apply(p, new, message.msg_id)

    async def use_uploaded(self, p, uploaded: UploadedSet, msg_id: MessageId | None) -> None:
        """An upload of ``p``'s parsed: it becomes their set (``hrtf_uploaded``, ``rendering``)."""
        async with self._lock(p):
            hrirs = uploaded.hrirs
            try:
                await asyncio.to_thread(_warm, hrirs, False, _frame_of(p))
            except (ValueError, MemoryError) as exc:  # a set too large for the renderer
                p.session.send(ErrorMessage(ErrorCode.BAD_SOFA, f"{uploaded.name!r} cannot be "
                                            f"rendered: {exc}"[:300], msg_id))
                p.flush()
                return
            p.session.send(HrtfUploaded(digest=uploaded.digest, name=uploaded.name,
                                        directions=len(hrirs.directions), taps=hrirs.taps,
                                        msg_id=msg_id))
            current = p.rendering
            if current is None:  # not in a room now: 'sofa:<digest>' chooses it after a join
                p.flush()
                return
            new = dataclasses.replace(current, hrtf=f"sofa:{uploaded.digest}",
                                      hrtf_name=uploaded.name, head_radius_m=None, hrirs=hrirs)
            await self._apply(p, new, msg_id)

    async def _resolve(self, hrtf: str, head_radius_m: float | None) -> ListenerRendering:
        """The set ``hrtf`` names, loaded (on a thread), as settings with the defaults' flags."""
        radius = None
        if hrtf == "spherical-head":
            steps = round((head_radius_m or DEFAULT_HEAD_RADIUS_M) / HEAD_RADIUS_STEP_M)
            radius = round(steps * HEAD_RADIUS_STEP_M, 4)
            hrirs = await asyncio.to_thread(load_hrtf, f"spherical-head:{radius}")
            name = hrirs.name
        elif hrtf == "kemar":
            hrirs = await asyncio.to_thread(load_hrtf, "kemar")
            name = hrirs.name
        else:
            digest = hrtf.removeprefix("sofa:")
            uploaded = self.registry.get(digest)
            if uploaded is None:
                raise UnknownHrtf(
                    f"this server keeps no HRTF set {digest[:12]}…: upload the file again (the "
                    f"server keeps the {self.registry.capacity} sets used last, until it "
                    "restarts)")
            hrirs, name = uploaded.hrirs, uploaded.name
        same = hrirs.digest == self.default_set.digest
        return ListenerRendering(hrtf, name, radius, hrirs=None if same else hrirs)

    async def _apply(self, p, new: ListenerRendering, msg_id: MessageId | None) -> None:
        """Hand ``new`` to the renderer (after warming what it needs) and tell ``p``."""
        digest = new.uploaded_digest
        if digest is not None:  # kept from now on, also while warming
            self.registry.use(digest)
        try:
            await asyncio.to_thread(_warm, new.hrirs or self.default_set, new.reference,
                                    _frame_of(p))
        except BaseException:
            if digest is not None:
                self.registry.release(digest)
            raise
        live, member_id, old = p.live, p.member_id, p.rendering
        if live is None or member_id is None or old is None:  # left meanwhile
            if digest is not None:
                self.registry.release(digest)
            return
        live.runner.configure_listener(live.room.member(member_id).slot, hrirs=new.hrirs,
                                       acoustics=new.acoustics, reference=new.reference)
        if old.uploaded_digest is not None:
            self.registry.release(old.uploaded_digest)
        p.rendering = new
        p.session.send(new.message(msg_id))
        p.flush()

    async def warm(self, live, frame: int) -> None:
        """Ready the sets ``live``'s listeners hear through for a clock of ``frame`` samples
        (the room's frame is changing): their spectra at its FFT size, on a worker thread."""
        sets = {(id(self.default_set), False): (self.default_set, False)}
        for p in list(live.participants.values()):
            if p.rendering is not None:
                chosen = p.rendering.hrirs or self.default_set
                sets[(id(chosen), p.rendering.reference)] = (chosen, p.rendering.reference)
        for hrirs, reference in sets.values():
            await asyncio.to_thread(_warm, hrirs, reference, frame)

    # rooms -------------------------------------------------------------------------------------

    async def open_room(self, live) -> bool:
        """A room opened: its saved acoustics, else the server's default (not saved as the
        room's own). Returns whether the room has acoustics now; settings that fail to build
        leave it dry, with a warning."""
        chosen = live.room.acoustics_settings
        settings = chosen or self.default_acoustics
        if settings.get("preset") == "off":
            return False
        try:
            return await self._set_room(live, settings, chosen=chosen is not None)
        except ValueError as exc:
            log.warning("room %s: acoustics %s cannot be built (%s); it is dry", live.room.name,
                        settings, exc)
            return False

    async def set_room(self, live, message: SetRoomAcoustics) -> None:
        """Apply ``set_room_acoustics``.

        Raises
        ------
        ValueError
            What the room model refused (a size and RT60 no materials reach…), for people.
        """
        await self._set_room(live, room_settings(message), chosen=True)

    async def _set_room(self, live, settings: dict[str, Any], chosen: bool) -> bool:
        """Build and set the room (on threads); ``chosen`` settings are kept with the room."""
        async with self._lock(live.room):
            model = await asyncio.to_thread(build_room, settings)
            await asyncio.to_thread(live.runner.renderer.set_room, model)
            if chosen:
                live.room.acoustics_settings = settings
            live.room.acoustics = model.describe() if model is not None else None
            live.room.version += 1
            return model is not None
