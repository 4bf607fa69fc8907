"""The protocol's limits, defined once: sizes, lengths, character sets and numeric ranges.

``docs/PROTOCOL.md`` documents the same numbers. Per-deployment knobs (message rate, strikes)
live in :class:`signaling.session.SessionLimits` instead.
"""

from __future__ import annotations

import re

#: Largest message, in UTF-8 bytes. The WebSocket shell should set ``max_size`` a little above.
MAX_MESSAGE_BYTES = 64 * 1024
#: Largest SDP offer or answer, in UTF-8 bytes.
MAX_SDP_BYTES = 32 * 1024
#: Deepest nesting of objects and arrays; the top-level object is depth 1, a position array 2.
MAX_DEPTH = 8

#: Room names: letters, digits, ``-`` and ``_`` (they appear in URLs: ``/?room=band``).
ROOM_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: Participant and source ids, as the server assigns them (``p-3``, ``ai-1``).
SOURCE_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: Seat tokens are opaque URL-safe strings handed out in ``joined``.
SEAT_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")
#: Room access tokens (``spatialjam token``): URL-safe base64 and the JWT-style separators.
TOKEN_RE = re.compile(r"[A-Za-z0-9_.~+/=-]{1,1024}")
#: ICE fields are ASCII in every browser: printable ASCII only.
PRINTABLE_ASCII_RE = re.compile(r"[\x20-\x7e]*")

MAX_NAME_CHARS = 40
MAX_INSTRUMENT_CHARS = 40
MAX_CLIENT_ID_CHARS = 64
MAX_CANDIDATE_CHARS = 1024
MAX_SDP_MID_CHARS = 64
MAX_UFRAG_CHARS = 256
MAX_MLINE_INDEX = 255

#: Largest integer a JavaScript number holds exactly (``Number.MAX_SAFE_INTEGER``).
MAX_SAFE_INTEGER = 2**53 - 1
#: Positions beyond this many metres from the room's origin are refused.
MAX_COORDINATE_M = 1000.0
#: Angles beyond this many degrees either way are refused (two turns allow unwrapped input).
MAX_ANGLE_DEG = 720.0
#: Largest personal-mix gain, linear (about +12 dB).
MAX_GAIN = 4.0
#: A head-pose quaternion's norm may differ from 1 by this much; it is then normalised.
QUATERNION_NORM_TOLERANCE = 0.01

#: Largest HRTF set a listener may upload (a SOFA file), in bytes: 32 MiB.
MAX_HRTF_UPLOAD_BYTES = 32 * 2**20
#: Most memory one uploaded HRTF set may hold in the server once prepared (responses,
#: direction grid and the renderer's spectra), in bytes: 320 MiB (``serve --upload-set-mb``).
#: The densest public sets we know (a 2° full-sphere grid: 16,020 directions of 128 taps at
#: 48 kHz) need about 270 MiB, MIT KEMAR 15 MiB; the 41,527-direction file of issue 16 would
#: need 742 MiB and is refused.
MAX_HRTF_SET_BYTES = 320 * 2**20
#: Most memory all uploaded HRTF sets a server keeps may hold together, in bytes: 1 GiB
#: (``serve --upload-budget-mb``), three of the largest sets, or as many typical ones
#: (KEMAR-sized) as the server keeps at all, on top of its own ~400 MiB.
HRTF_UPLOADS_BUDGET_BYTES = 1024 * 2**20
#: Largest binary frame of an upload, in bytes: 256 KiB.
MAX_UPLOAD_CHUNK_BYTES = 256 * 1024
#: Largest WebSocket frame the shell reads (its ``max_size``): a message or an upload chunk,
#: and a little slack. A text frame past ``MAX_MESSAGE_BYTES + 1024`` closes the connection
#: (1009), as it did before uploads raised this limit.
MAX_FRAME_BYTES = max(MAX_MESSAGE_BYTES, MAX_UPLOAD_CHUNK_BYTES) + 1024
MAX_TEXT_FRAME_BYTES = MAX_MESSAGE_BYTES + 1024
#: A signaling socket's kernel send buffer (bytes; Linux books twice this). Signaling is a
#: few kB/s, and this holds a 32 KiB SDP with room to spare; the kernel's own autotuning
#: (up to 4 MiB) would let a client that stops reading hold up minutes of messages before
#: the server's outbox limit (``server.rooms.hub.OUTBOX_LIMIT``) notices it.
SIGNALING_SEND_BUFFER = 64 * 1024
#: An uploaded file's name, as the listener's client gives it (for people only).
MAX_UPLOAD_NAME_CHARS = 120
#: HRTF sets by name: the server's built-in ones, or an uploaded set by its content digest.
HRTF_RE = re.compile(r"kemar|spherical-head|sofa:[0-9a-f]{64}")
#: The spherical head model's radius, metres (an adult head is 7 to 10 cm).
MIN_HEAD_RADIUS_M, MAX_HEAD_RADIUS_M = 0.05, 0.12
#: Room acoustics presets and ranges, as :mod:`dsp.room_model` has them (a test keeps them in
#: step): a shoebox room's sides (metres), its reverberation time RT60 (seconds), and the
#: image-source reflection order (0: late tail only, 1: first order, 2).
ROOM_PRESETS = ("dry-studio", "rehearsal-room", "club", "concert-hall")
MIN_ROOM_SIDE_M, MAX_ROOM_SIDE_M = 2.0, 60.0
MIN_RT60_S, MAX_RT60_S = 0.1, 4.0
MAX_REFLECTION_ORDER = 2

#: A chat message's most characters (after stripping), and how many the room keeps for joiners.
MAX_CHAT_CHARS = 500
CHAT_HISTORY = 50
#: Chat messages per member: bursts of this many, then one per CHAT_INTERVAL_S.
CHAT_BURST = 5
CHAT_INTERVAL_S = 1.0
