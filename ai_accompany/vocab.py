"""The token vocabulary and music-theory tables shared by training, the runtime and eval.

Everything the models read or write is an integer index defined here, once. NumPy only: the
training script (torch) and the runtime (onnxruntime) both build their inputs with these
functions, so the two cannot drift apart.

Time grid
---------
One step is a 16th note (:data:`STEPS_PER_BEAT` = 4 steps per quarter note). ``beat_pos`` is the
step's position inside its bar, counted in 16ths from the downbeat (0 … 15 in 4/4, 0 … 11 in 3/4);
the networks see ``min(beat_pos, BEAT_SLOTS - 1)``.

Note tokens (one per voice per step, :data:`NUM_TOKENS` of them)
----------------------------------------------------------------
=========================  ==================================================================
``REST`` = 0               the voice is silent at this step
``HOLD`` = 1               the note sounding at the previous step goes on (no new onset)
``2 + (pitch - PITCH_LO)``  a new note of MIDI ``pitch`` starts at this step,
                           ``PITCH_LO`` ≤ pitch ≤ ``PITCH_HI``
=========================  ==================================================================

A repeated note is a new onset of the same pitch, not a hold.

Sounding-pitch indices (what is heard at a step, onset or not) use the same layout with slot 1
meaning *unknown* instead of *hold*: ``SND_REST`` = 0, ``SND_UNKNOWN`` = 1, pitch as above. The
harmoniser's melody look-ahead uses *unknown* for steps the caller cannot predict.

Chords and keys
---------------
A chord is a root pitch class (0 = C … 11 = B, :data:`NO_CHORD_ROOT` = 12 when nothing sounds) and
one of :data:`CHORD_QUALITIES`. A key is a tonic pitch class and a mode, ``"major"`` or
``"minor"``; the minor scale counts the raised 6th and 7th as in key (harmonic and melodic minor).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

STEPS_PER_BEAT = 4  # 16th notes per quarter note
BEAT_SLOTS = 24  # beat_pos values the networks tell apart (a 3/2 bar has 24 steps)

PITCH_LO = 28  # E1: Bach's lowest bass (C2) transposed down a tritone still fits
PITCH_HI = 91  # G6
REST = 0
HOLD = 1
SND_REST = 0
SND_UNKNOWN = 1
FIRST_PITCH_TOKEN = 2
NUM_TOKENS = FIRST_PITCH_TOKEN + PITCH_HI - PITCH_LO + 1

VOICES = ("soprano", "alto", "tenor", "bass")
#: Inclusive MIDI ranges the runtime keeps each voice in: the chorales' own ranges (soprano
#: 57–81, alto 53–74, tenor 48–69, bass 36–64 in the corpus), widened a little at each end.
VOICE_RANGES = {
    "soprano": (55, 84),
    "alto": (50, 77),
    "tenor": (45, 72),
    "bass": (33, 64),
}

CHORD_QUALITIES = ("maj", "min", "dim", "aug", "dom7", "maj7", "min7", "hdim7", "dim7", "none")
#: Pitch classes of each quality above its root.
CHORD_TEMPLATES = {
    "maj": (0, 4, 7),
    "min": (0, 3, 7),
    "dim": (0, 3, 6),
    "aug": (0, 4, 8),
    "dom7": (0, 4, 7, 10),
    "maj7": (0, 4, 7, 11),
    "min7": (0, 3, 7, 10),
    "hdim7": (0, 3, 6, 10),
    "dim7": (0, 3, 6, 9),
}
NO_CHORD_ROOT = 12
MODES = ("major", "minor")
SCALES = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 9, 10, 11),  # natural minor with the raised 6th and 7th
}

#: Columns of the harmoniser's integer input ``x`` (one row per stream and step). The last
#: four carry this step's bass and tenor once chosen: the voices are decided bass first, then
#: tenor given the bass, then alto given both (three calls of the graph per step, same state in;
#: see :class:`ai_accompany.models.Harmoniser`). They reach only the output heads that come
#: later in that order, never the recurrent state; :data:`UNDECIDED` fills them before.
#: The key columns hold :data:`KEY_UNKNOWN` when the caller does not know the key.
LOOKAHEAD = 4
HARMONISER_CORE_COLUMNS = 12
HARMONISER_COLUMNS = (
    "melody_token", "melody_sounding", *(f"lookahead_{k + 1}" for k in range(LOOKAHEAD)),
    "beat", "prev_alto", "prev_tenor", "prev_bass", "key_tonic", "key_mode",
    "bass_token", "bass_sounding", "tenor_token", "tenor_sounding")
UNDECIDED = (REST, SND_UNKNOWN, REST, SND_UNKNOWN)
KEY_UNKNOWN = (12, 2)  # (tonic, mode) indices meaning "not known"
H_BEAT, H_PREV, H_KEY, H_BASS, H_TENOR = 6, 7, 10, 12, 14  # first column of each group
#: Columns of the improviser's integer input ``x``.
IMPROVISER_COLUMNS = (
    "prev_token", "prev_sounding", "chord_root", "chord_quality", "key_tonic", "key_mode",
    "beat", "prev_pc_above_root", "prev_pc_above_tonic")
#: Index sizes of each column (embedding table sizes in the networks).
HARMONISER_CARDINALITY = (NUM_TOKENS, NUM_TOKENS, *([NUM_TOKENS] * LOOKAHEAD), BEAT_SLOTS,
                          NUM_TOKENS, NUM_TOKENS, NUM_TOKENS, 13, 3, *([NUM_TOKENS] * 4))
IMPROVISER_CARDINALITY = (NUM_TOKENS, NUM_TOKENS, 13, len(CHORD_QUALITIES), 12, len(MODES),
                          BEAT_SLOTS, 13, 13)


def pitch_token(pitch: int) -> int:
    """The onset token of MIDI ``pitch``; ``ValueError`` outside ``PITCH_LO..PITCH_HI``."""
    if not PITCH_LO <= pitch <= PITCH_HI:
        raise ValueError(f"pitch must lie in {PITCH_LO}..{PITCH_HI} (MIDI), got {pitch}")
    return FIRST_PITCH_TOKEN + pitch - PITCH_LO


def token_pitch(token: int) -> int | None:
    """MIDI pitch of an onset token, ``None`` for ``REST`` and ``HOLD``."""
    return int(token) - FIRST_PITCH_TOKEN + PITCH_LO if token >= FIRST_PITCH_TOKEN else None


def sounding(tokens: np.ndarray) -> np.ndarray:
    """Sounding-pitch indices of a token sequence along axis 0: holds carry the last onset.

    ``tokens`` has shape ``(T, ...)``; a ``HOLD`` at step 0 or after a rest counts as a rest.
    """
    tokens = np.asarray(tokens)
    out = np.empty_like(tokens)
    current = np.full(tokens.shape[1:], SND_REST, dtype=tokens.dtype)
    for t in range(tokens.shape[0]):
        current = np.where(tokens[t] == HOLD, current, tokens[t])
        out[t] = current
    return out


def beat_index(beat_pos: np.ndarray | int) -> np.ndarray | int:
    """The networks' beat slot of a position in the bar (16ths since the downbeat)."""
    return np.minimum(beat_pos, BEAT_SLOTS - 1)


def key_scale_mask(tonic_pc: int, mode: str) -> np.ndarray:
    """Boolean ``(12,)`` mask of the pitch classes in the key (see :data:`SCALES`)."""
    mask = np.zeros(12, dtype=bool)
    mask[[(tonic_pc + d) % 12 for d in SCALES[mode]]] = True
    return mask


def chord_tone_mask(root_pc: int, quality: str) -> np.ndarray:
    """Boolean ``(12,)`` mask of the chord's pitch classes (all False for ``"none"``)."""
    mask = np.zeros(12, dtype=bool)
    if quality != "none" and root_pc != NO_CHORD_ROOT:
        mask[[(root_pc + d) % 12 for d in CHORD_TEMPLATES[quality]]] = True
    return mask


def match_chord(weights: np.ndarray, bass_pc: int | None = None) -> tuple[int, str]:
    """Name the chord of a pitch-class weight vector by template matching.

    Score of root r and quality q with template set T (pitch classes r + T):

    .. math:: s = \\sum_{p \\in T} w_p - \\sum_{p \\notin T} w_p
              - \\tfrac{1}{2} \\bar w \\, |\\{p \\in T : w_p = 0\\}| + 0.3 \\bar w [r = b]

    where :math:`\\bar w` is the mean non-zero weight and b the bass pitch class. Ties go to the
    quality listed first in :data:`CHORD_QUALITIES` (triads before sevenths), then the lower root.
    Returns ``(NO_CHORD_ROOT, "none")`` when every weight is zero.
    """
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (12,):
        raise ValueError(f"weights must have shape (12,), got {weights.shape}")
    if not np.any(weights > 0):
        return NO_CHORD_ROOT, "none"
    mean_w = float(weights[weights > 0].mean())
    total = float(weights.sum())
    best = (-np.inf, NO_CHORD_ROOT, "none")
    for quality in CHORD_QUALITIES[:-1]:
        for root in range(12):
            pcs = [(root + d) % 12 for d in CHORD_TEMPLATES[quality]]
            inside = float(weights[pcs].sum())
            missing = sum(1 for p in pcs if weights[p] == 0)
            score = 2 * inside - total - 0.5 * mean_w * missing
            if bass_pc is not None and bass_pc == root:
                score += 0.3 * mean_w
            if score > best[0] + 1e-9:
                best = (score, root, quality)
    return best[1], best[2]


def harmoniser_row(melody_token: int, melody_sounding: int, lookahead: Sequence[int],
                   beat_pos: int, prev_atb: Sequence[int], key: Sequence[int] = KEY_UNKNOWN,
                   decided: Sequence[int] = UNDECIDED) -> np.ndarray:
    """One row of the harmoniser's input ``x`` (columns :data:`HARMONISER_COLUMNS`).

    ``lookahead`` holds sounding-pitch indices of the next steps; missing ones are unknown.
    ``key`` is (tonic pitch class, index into :data:`MODES`) or :data:`KEY_UNKNOWN`.
    ``decided``: this step's bass token and sounding index, then the tenor's, as far as chosen.
    """
    la = list(lookahead[:LOOKAHEAD]) + [SND_UNKNOWN] * (LOOKAHEAD - len(lookahead[:LOOKAHEAD]))
    return np.array([melody_token, melody_sounding, *la, beat_index(beat_pos), *prev_atb, *key,
                     *decided], dtype=np.int64)


def relative_pc(sounding_idx: np.ndarray | int, ref_pc: np.ndarray | int) -> np.ndarray | int:
    """Pitch class of a sounding index above a reference pitch class, 12 for rest/unknown."""
    sounding_idx = np.asarray(sounding_idx)
    pc = (sounding_idx - FIRST_PITCH_TOKEN + PITCH_LO - np.asarray(ref_pc)) % 12
    return np.where((sounding_idx >= FIRST_PITCH_TOKEN) & (np.asarray(ref_pc) < 12), pc, 12)


def improviser_rows(prev_token: np.ndarray, prev_sounding: np.ndarray, chord_root: np.ndarray,
                    chord_quality: np.ndarray, key_tonic: np.ndarray, key_mode: np.ndarray,
                    beat_pos: np.ndarray) -> np.ndarray:
    """The improviser's input ``x`` for arrays of steps (columns :data:`IMPROVISER_COLUMNS`).

    Every argument is an integer array of the same shape ``S``; the result has shape ``S + (9,)``.
    ``chord_quality`` and ``key_mode`` are indices into :data:`CHORD_QUALITIES` and :data:`MODES`.
    """
    prev_sounding = np.asarray(prev_sounding)
    cols = [prev_token, prev_sounding, chord_root, chord_quality, key_tonic, key_mode,
            beat_index(np.asarray(beat_pos)), relative_pc(prev_sounding, chord_root),
            relative_pc(prev_sounding, key_tonic)]
    return np.stack([np.asarray(c, dtype=np.int64) for c in cols], axis=-1)


def harmoniser_inputs(tokens: np.ndarray, beat_pos: np.ndarray,
                      key: Sequence[int] = KEY_UNKNOWN) -> tuple[np.ndarray, np.ndarray]:
    """Teacher-forced inputs and targets of one chorale for the harmoniser.

    ``tokens`` is ``(T, 4)`` (soprano, alto, tenor, bass), ``beat_pos`` ``(T,)``, ``key`` as in
    :func:`harmoniser_row`. Returns ``x`` ``(T, len(HARMONISER_COLUMNS))`` with the true
    look-ahead (rest past the end), Bach's own previous alto/tenor/bass and his bass and tenor of
    this step (for the later heads), and the targets ``(T, 3)`` (alto, tenor, bass).
    """
    tokens = np.asarray(tokens, dtype=np.int64)
    steps = len(tokens)
    snd = sounding(tokens)
    mel_snd = snd[:, 0]
    ahead = np.concatenate([mel_snd, np.full(LOOKAHEAD, SND_REST, dtype=np.int64)])
    lookahead = np.stack([ahead[k + 1:k + 1 + steps] for k in range(LOOKAHEAD)], axis=1)
    prev = np.concatenate([np.full((1, 3), REST, dtype=np.int64), tokens[:-1, 1:]])
    beat = beat_index(np.asarray(beat_pos, dtype=np.int64))
    decided = np.stack([tokens[:, 3], snd[:, 3], tokens[:, 2], snd[:, 2]], axis=1)
    keys = np.broadcast_to(np.asarray(key, dtype=np.int64), (steps, 2))
    x = np.concatenate([tokens[:, :1], mel_snd[:, None], lookahead, beat[:, None], prev, keys,
                        decided], axis=1)
    return x, tokens[:, 1:].copy()


def improviser_inputs(melody: np.ndarray, chord_root: np.ndarray, chord_quality: np.ndarray,
                      key_tonic: int, key_mode: int, beat_pos: np.ndarray,
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Teacher-forced inputs ``(T, 9)`` and targets ``(T,)`` of one melody for the improviser.

    Step t sees the melody's token and sounding pitch at t − 1 and the chord, key and beat of t.
    """
    melody = np.asarray(melody, dtype=np.int64)
    snd = sounding(melody)
    prev_tok = np.concatenate([[REST], melody[:-1]])
    prev_snd = np.concatenate([[SND_REST], snd[:-1]])
    steps = len(melody)
    x = improviser_rows(prev_tok, prev_snd, chord_root, chord_quality,
                        np.full(steps, key_tonic), np.full(steps, key_mode), beat_pos)
    return x, melody.copy()
