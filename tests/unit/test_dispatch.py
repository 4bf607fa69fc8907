"""The table from message type to handler (server/rooms/dispatch.py) covers the protocol."""

from __future__ import annotations

from types import SimpleNamespace

from server.rooms.dispatch import routes
from signaling.messages import CLIENT_MESSAGES
from signaling.render_messages import HrtfChunk


class Anything(SimpleNamespace):
    """A stand-in hub whose every attribute is a handler (the table only names them)."""

    def __getattr__(self, name: str):
        return Anything()

    def __call__(self, *args, **kwargs):
        return None


def test_every_message_a_session_yields_has_a_row():
    table = routes(Anything())
    missing = sorted(cls.TYPE for cls in (*CLIENT_MESSAGES.values(), HrtfChunk)
                     if cls not in table)
    assert missing == [], f"no handler for {missing}"


def test_only_admins_edit_the_room_and_its_ai_musician():
    table = routes(Anything())
    admin = sorted(cls.TYPE for cls, route in table.items() if route.grant == "admin")
    assert admin == ["ai_add", "ai_remove", "ai_update", "kick", "lock_room", "set_frame",
                     "set_metronome",
                     "set_room_acoustics", "start_recording", "stop_recording"]
    assert {route.grant for route in table.values()} == {None, "admin"}


def test_the_media_rows_route_to_the_real_peers_handlers():
    """The peers' handlers by their names, not an attribute that shadows one (an ``ice``
    attribute holding the operator's ICE options once hid ``Peers.ice``: every trickled
    candidate was answered ``internal_error``)."""
    import inspect

    from server.media.ice import IceConfig
    from server.media.ingress import DropCounts
    from server.media.peers import Peers
    from signaling.messages import Answer, Ice, Offer

    async def evict(p, code, reason) -> None:
        return None

    hub = Anything()
    hub.peers = Peers(DropCounts(), evict, IceConfig())
    table = routes(hub)
    for message in (Offer, Answer, Ice):
        handle = table[message].handle
        assert inspect.iscoroutinefunction(handle) and handle.__self__ is hub.peers, message
        assert handle.__name__ == message.TYPE, (message, handle)
