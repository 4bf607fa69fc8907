"""spatialjam signaling: the WebSocket protocol at ``/ws``, as a sans-I/O core.

Nothing here touches a socket, a clock or audio; ``docs/PROTOCOL.md`` documents the protocol.

- :mod:`signaling.wire` — JSON text in (size, depth, strict RFC 8259) and out (``encode``)
- :mod:`signaling.messages` — client→server messages and ``parse_message``
- :mod:`signaling.stage_messages` — stage edits and personal-mix messages
- :mod:`signaling.render_messages` — rendering settings, room acoustics, HRTF uploads
- :mod:`signaling.server_messages` — server→client messages
- :mod:`signaling.errors` — ``ProtocolError``, ``InvalidState`` and the stable ``ErrorCode``
- :mod:`signaling.limits` — sizes, lengths, character sets and numeric ranges
- :mod:`signaling.ratelimit` — token bucket and strike counter, time injected
- :mod:`signaling.session` — ``SignalingSession``, one connection's protocol state machine
"""
