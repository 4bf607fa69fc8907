"""Listening: onsets, tempo and beat phase, key and chord, lead pitch of the room's downmix.

``Listener.process(block, room_sample) -> Analysis`` per 20 ms block (16 kHz mono); every time is
a room-clock sample (48 kHz). ``count_in`` and ``click_sound`` give a metronome to play.
"""

from ai_accompany.listen.listener import Analysis, Listener
from ai_accompany.listen.metronome import click_sound, count_in

__all__ = ["Analysis", "Listener", "click_sound", "count_in"]
