"""What the ``spatialjam`` commands' options share: argument types that check their range and
say what was wrong in one line, and the options several commands take (the HRTF set, the
mixing device). The commands other packages add (``bench``, through the ``spatialjam.commands``
entry point) use them too."""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
from collections.abc import Callable

#: The most ``serve --workers`` (processes, one per core).
MAX_WORKERS = 64
#: The frames a room may tick at (ms): ``hrtf.constants.FRAME_CHOICES_MS``, repeated here so
#: that parsing options does not load the engine (the front of ``serve --workers N`` never
#: does); tests/unit/test_reframe.py checks that the two agree.
FRAME_MS_CHOICES = (2.5, 5.0, 10.0, 20.0)


def finite(kind: str, lo: float | None = None, hi: float | None = None,
           positive: bool = False) -> Callable[[str], float]:
    """An argument type: a finite number, ``> 0`` if ``positive``, in ``lo..hi`` if given
    (both or neither); ``kind`` names it in the error."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{kind} must be a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{kind} must be finite, got {text!r}")
        if positive and value <= 0:
            raise argparse.ArgumentTypeError(f"{kind} must be > 0, got {text!r}")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"{kind} must lie in {lo:g}..{hi:g}, got {text!r}")
        return value

    return parse


def count(kind: str, lo: int, hi: int) -> Callable[[str], int]:
    """An argument type: a whole number in ``lo..hi``; ``kind`` names it in the error."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{kind} must be a whole number, got {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{kind} must lie in {lo}..{hi}, got {value}")
        return value

    return parse


def frame_ms(text: str) -> float:
    """An argument type: a room frame in milliseconds, one of :data:`FRAME_MS_CHOICES`."""
    choices = ", ".join(f"{ms:g}" for ms in FRAME_MS_CHOICES)
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"the frame must be one of {choices} ms, got {text!r}") from None
    if value not in FRAME_MS_CHOICES:
        raise argparse.ArgumentTypeError(f"the frame must be one of {choices} ms, got {text!r}")
    return value


def add_frame_arg(p: argparse.ArgumentParser, help_text: str) -> None:
    """``--frame-ms {2.5,5,10,20}``, by default ``$SPATIALJAM_FRAME_MS`` or 20."""
    p.add_argument("--frame-ms", type=frame_ms, metavar="MS",
                   default=os.environ.get("SPATIALJAM_FRAME_MS", "20"), help=help_text)


def cidr(kind: str) -> Callable[[str], str]:
    """An argument type: an IP address or network (``203.0.113.7``, ``10.0.0.0/8``,
    ``2001:db8::/32``); ``kind`` names it in the error."""
    def parse(text: str) -> str:
        try:
            return str(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{kind} must be an IP address or network such as 10.0.0.0/8, got {text!r}") \
                from None

    return parse


def env_list(name: str) -> list[str] | None:
    """The comma-separated values of the environment variable ``name`` (None when unset): the
    default of a repeatable option. argparse does not pass a default through the option's
    type, so the values are checked where the option is used."""
    value = os.environ.get(name)
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def add_hrtf_args(p: argparse.ArgumentParser) -> None:
    """``--sofa FILE`` or ``--hrtf NAME`` (read back with :func:`hrtf_spec`)."""
    group = p.add_mutually_exclusive_group()
    group.add_argument("--sofa", metavar="FILE", help="SOFA SimpleFreeFieldHRIR file to use")
    group.add_argument("--hrtf", default="kemar", metavar="NAME",
                       help="built-in set: kemar (default), spherical-head[:RADIUS_M]")


def add_device_arg(p: argparse.ArgumentParser) -> None:
    """``--device cpu|cuda``: which mixing kernels."""
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="mixing kernels: cpu (default) or cuda (needs the gpu extra and a GPU)")


def hrtf_spec(args: argparse.Namespace) -> str:
    """The HRTF set named by ``--sofa``/``--hrtf``."""
    return args.sofa if args.sofa else args.hrtf
