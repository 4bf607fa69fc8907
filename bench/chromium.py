"""Debian's Chromium as the benches and the end-to-end tests launch it (through Playwright).

No browser is downloaded (``playwright install`` cannot run here): ``make test`` installs
Debian's ``chromium`` package, and Playwright drives ``/usr/bin/chromium`` headless with a fake
microphone and camera, the media permission granted, and nothing reaching the network but the
server under test.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

CHROMIUM = Path("/usr/bin/chromium")
SAMPLE_RATE = 48_000

CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
]


def write_wav(path: Path, samples: np.ndarray) -> Path:
    """16-bit mono 48 kHz PCM (what Chrome's fake capture device reads, and loops)."""
    pcm = np.round(np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(pcm.tobytes())
    return path


def launch(playwright, microphone_wav: Path):
    """A headless Chromium whose fake microphone plays ``microphone_wav`` (looped)."""
    if not CHROMIUM.exists():
        raise RuntimeError(f"{CHROMIUM} is missing: install Debian's chromium package "
                           "(make test does)")
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM), headless=True,
        args=[*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={microphone_wav}"])
