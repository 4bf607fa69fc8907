"""The AI's decisions: each step decided just before it sounds, a count-in and clicks on the
beat, no pitched note before the key is known, rests when the players rest."""

from __future__ import annotations

import numpy as np

from ai_accompany.brain import BEATS_PER_BAR, DEFAULT_LEAD_MS, Brain, BrainConfig, name_chord
from ai_accompany.ipc import ANALYSIS_RATE
from ai_accompany.online import BEAT_ZERO, melody_events, step_samples
from ai_accompany.tunes import Tune
from dsp.downmix import AnalysisDownmix
from dsp.notes import cut_lines
from dsp.synth import Synth
from tests.helpers.music import LINE

BLOCK = ANALYSIS_RATE // 50  # 20 ms
ROOM_PER_BLOCK = 960
BPM = 120.0
BEAT = 60 * 48_000 // 120


def scale_tune(bars: int = 4, rest_bars: tuple[int, ...] = ()) -> Tune:
    """C major up and down in quarter notes, ``bars`` bars; the bars in ``rest_bars`` silent."""
    pitch, onset = np.full(bars * 16, -1), np.zeros(bars * 16, bool)
    for beat in range(bars * 4):
        if beat // 4 in rest_bars:
            continue
        pitch[beat * 4:beat * 4 + 4] = LINE[beat % len(LINE)]
        onset[beat * 4] = True
    return Tune("scale", "chorale", BPM, pitch, onset, 0, "major")


def run(config: BrainConfig, seconds: float, tune: Tune | None = None
        ) -> list[tuple[int, list]]:
    """The room plays ``tune`` (silence without one) into a brain for ``seconds``: (the room
    sample each block ends at, the events decided from it) per block."""
    brain, out = Brain(config), []
    player, downmix = Synth("epiano"), AnalysisDownmix(ANALYSIS_RATE)
    if tune is not None:
        player.schedule(melody_events(tune))
    for k in range(int(seconds * 50)):
        block = downmix.process(player.render(k * ROOM_PER_BLOCK, ROOM_PER_BLOCK))
        events, _ = brain.hear(k * ROOM_PER_BLOCK, block)
        if events:
            out.append(((k + 1) * ROOM_PER_BLOCK, events))
    return out


def brain_after(config: BrainConfig, seconds: float, tune: Tune) -> Brain:
    """A brain that has heard ``tune`` for ``seconds``."""
    brain = Brain(config)
    player, downmix = Synth("epiano"), AnalysisDownmix(ANALYSIS_RATE)
    player.schedule(melody_events(tune))
    for k in range(int(seconds * 50)):
        brain.hear(k * ROOM_PER_BLOCK, downmix.process(player.render(k * ROOM_PER_BLOCK,
                                                                     ROOM_PER_BLOCK)))
    return brain


def pitched(decided) -> list:
    return [e for _, batch in decided for e in batch if e.voice != "metronome"]


def on_the_grid(config: BrainConfig) -> BrainConfig:
    return BrainConfig.from_dict({**config.__dict__, "beat_zero": BEAT_ZERO})


def test_in_silence_it_counts_in_and_clicks_but_plays_no_note_before_it_knows_the_key():
    decided = run(BrainConfig(bpm=BPM, metronome=True, instrument="organ"), 6.0)
    events = [e for _, batch in decided for e in batch]
    clicks = [e for e in events if e.voice == "metronome"]
    assert len(clicks) >= 10 and not pitched(decided)  # nothing heard: no key, no note
    starts = np.array([c.start for c in clicks])
    assert np.all(np.diff(starts) == BEAT)  # on the beat grid, every beat
    pitches = [c.pitch for c in clicks[:8]]  # one accented downbeat in every four
    first = pitches.index(96)
    assert first < 4 and all(p == (96 if (k - first) % 4 == 0 else 84)
                             for k, p in enumerate(pitches))


def test_it_plays_once_it_knows_the_key_and_decides_each_step_just_before_it_sounds():
    config = on_the_grid(BrainConfig(bpm=BPM, metronome=True, instrument="organ"))
    decided = run(config, 9.0, scale_tune())
    notes = pitched(decided)
    assert len(notes) > 20
    clicks = [e for _, batch in decided for e in batch if e.voice == "metronome"]
    melody_starts = BEAT_ZERO + 4 * BEAT  # after the count-in bar
    assert min(n.start for n in notes) >= max(clicks[BEATS_PER_BAR].start, melody_starts)
    lead = DEFAULT_LEAD_MS * 48
    for when, batch in decided:
        for e in batch:  # never for a step already under way, never a block earlier than need be
            assert when + lead - 1 <= e.start < when + lead + ROOM_PER_BLOCK + 1, (when, e)
    # It says its plan: the chord its voices sound, and the one it expects on the next beat.
    status = brain_after(config, 9.0, scale_tune()).status()
    assert status["waiting"] is None and status["key"] == "C major"
    assert status["playing"] and status["coming"], status
    # In C major, on the room's grid of 16ths.
    assert all(n.pitch % 12 in (0, 2, 4, 5, 7, 9, 11) for n in notes)
    steps = (np.array([n.start for n in notes]) - BEAT_ZERO) / (BEAT / 4)
    assert np.allclose(steps, np.round(steps), atol=1e-3)


def test_the_rooms_metronome_sets_its_count_in_without_clicks_of_its_own():
    """With the room's metronome on, the server sets count_in_beats (three bars here): the AI
    only listens that many beats, then plays; no click of its own."""
    config = BrainConfig.from_dict({"bpm": BPM, "metronome": False, "count_in_beats": 12,
                                    "beat_zero": BEAT_ZERO})
    assert config.count_in_beats == 12
    decided = run(config, 10.0, scale_tune(6))
    events = [e for _, batch in decided for e in batch]
    assert events and all(e.voice != "metronome" for e in events)
    assert min(e.start for e in events) >= BEAT_ZERO + 12 * BEAT
    early = pitched(run(BrainConfig.from_dict({**config.__dict__, "count_in_beats": 4}), 10.0,
                        scale_tune(6)))
    assert min(e.start for e in early) < BEAT_ZERO + 12 * BEAT  # the count-in held it back
    assert BrainConfig.from_dict({"count_in_beats": True}).count_in_beats == -1  # not a number


def test_the_accompaniment_rests_when_the_player_rests_and_comes_back_after():
    tune = scale_tune(8, rest_bars=(4, 5))
    config = on_the_grid(BrainConfig(bpm=BPM, count_in_beats=4))
    notes = cut_lines(pitched(run(config, 20.0, tune)))
    bar = 16 * step_samples(tune)
    rest_from, rest_to = BEAT_ZERO + 5 * bar, BEAT_ZERO + 7 * bar  # the count-in bar, then 4
    ringing = sum(max(0, min(n.end, rest_to) - max(n.start, rest_from)) for n in notes
                  if n.velocity > 0)
    # Sounding in the rest: at most the first half beat, while it hears the last note fade.
    voices = len({n.voice for n in notes})
    assert ringing <= voices * 0.5 * BEAT, ringing / BEAT
    assert any(n.start >= rest_to for n in notes)  # and it plays again with the player
    assert any(rest_from - bar < n.start < rest_from for n in notes)


def test_a_style_sets_the_texture_and_a_bass_plays_the_bass_line_alone():
    tune = scale_tune(6)
    folk = pitched(run(on_the_grid(BrainConfig(bpm=BPM, style="folk")), 12.0, tune))
    bass = [n for n in folk if n.voice == "bass"]
    upper = [n for n in folk if n.voice in ("alto", "tenor")]
    beat_of = lambda n: round((n.start - BEAT_ZERO) / BEAT) % 4  # noqa: E731
    struck = lambda ns: [n for n in ns if (n.start - BEAT_ZERO) % BEAT == 0]  # noqa: E731
    assert {beat_of(n) for n in struck(bass)} == {0, 2}  # oom (beats 1 and 3) …
    assert {beat_of(n) for n in struck(upper)} == {1, 3}  # … pah (2 and 4)
    alone = pitched(run(on_the_grid(BrainConfig(bpm=BPM, instrument="bass")), 12.0, tune))
    assert alone and {n.voice for n in alone} == {"bass"}
    assert BrainConfig.from_dict({"style": "polka"}).style == "chorale"  # unknown: the default


def test_saying_its_plan_changes_nothing_it_plays():
    """The plan is worked out on copies of the models: a brain asked for it every block plays
    exactly what one never asked plays."""
    config = on_the_grid(BrainConfig(bpm=BPM))
    tune = scale_tune(4)
    asked, quiet = Brain(config), Brain(config)
    player, downmix = Synth("epiano"), AnalysisDownmix(ANALYSIS_RATE)
    player.schedule(melody_events(tune))
    out = {id(asked): [], id(quiet): []}
    for k in range(int(8.0 * 50)):
        block = downmix.process(player.render(k * ROOM_PER_BLOCK, ROOM_PER_BLOCK))
        for brain in (asked, quiet):
            out[id(brain)] += brain.hear(k * ROOM_PER_BLOCK, block)[0]
        asked.status()
    assert out[id(asked)] == out[id(quiet)] and len(out[id(quiet)]) > 10


def test_chords_are_named_from_the_voices():
    assert name_chord((67, 64, 48)) == "C"
    assert name_chord((72, 64, 57)) == "Am"
    assert name_chord((65, 59, 43)) == "G7"
    assert name_chord((None, None, None)) is None


def test_a_key_the_room_declares_is_played_in_from_the_players_first_beat():
    """Told the key (the room's ``set_metronome`` ``key``), it does not wait to hear it: it
    joins on the player's second beat (the first is heard before it can answer), in the key
    told; without, it listens for beats first."""
    grid = on_the_grid(BrainConfig(bpm=BPM, metronome=True, instrument="organ"))
    told = BrainConfig.from_dict({**grid.__dict__, "key_tonic": 0, "key_mode": "major"})
    assert (told.key_tonic, told.key_mode) == (0, "major")
    melody_starts = BEAT_ZERO + 4 * BEAT
    first = {}
    for name, config in (("told", told), ("heard", grid)):
        notes = pitched(run(config, 9.0, scale_tune()))
        first[name] = min(n.start for n in notes) - melody_starts
        assert all(n.pitch % 12 in (0, 2, 4, 5, 7, 9, 11) for n in notes)
    assert first["told"] <= BEAT < first["heard"], first
    silent = Brain(told)  # before anything is heard it names the key it was told
    assert silent.status()["key"] == "C major"
    for bad in ({"key_tonic": 12, "key_mode": "major"}, {"key_tonic": 2, "key_mode": "lydian"},
                {"key_tonic": True, "key_mode": "major"}, {"key_tonic": "D"}):
        assert BrainConfig.from_dict(bad).key_tonic == -1, bad


def test_answering_it_plays_in_the_players_rest_and_stops_a_step_after_they_play_again():
    """``call_response``: its line sounds only while the players rest, and each step is decided
    just before it sounds, so its answer ends at the step after the players come back in (a
    line planned a beat at a time rang on for up to a beat over them)."""
    config = on_the_grid(BrainConfig(bpm=BPM, role="call_response"))
    decided = run(config, 14.0, scale_tune(6, rest_bars=(2, 3)))
    sounded = [n for n in cut_lines(e for _, batch in decided for e in batch
                                    if e.voice == "lead") if n.velocity > 0]
    bar = 4 * BEAT
    rest = (BEAT_ZERO + 3 * bar, BEAT_ZERO + 5 * bar)  # after the count-in and two bars
    assert len(sounded) >= 4, sounded
    assert all(rest[0] <= n.start <= rest[1] for n in sounded), [n.start for n in sounded]
    assert max(n.end for n in sounded) <= rest[1] + BEAT // 2, (rest, sounded[-1])
