"""``spatialjam token``: mint a room access token, or create the secret that signs them."""

from __future__ import annotations

import argparse
import re
import time
from urllib.parse import urlencode

from server.errors import CliError
from server.web.access import SecretError, load_secret, write_new_secret
from signaling.access import DEFAULT_GRANTS, GRANTS, MAX_TTL_S, mint

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``6h``, ``7d`` → seconds (more than 0, at most 366 days)."""
    match = _DURATION_RE.fullmatch(text.strip().lower())
    if match is None:
        raise argparse.ArgumentTypeError(
            f"a lifetime is a number with an optional unit s, m, h or d (like 6h), got {text!r}")
    seconds = float(match.group(1)) * _UNIT_S[match.group(2)]
    if not 0 < seconds <= MAX_TTL_S:
        raise argparse.ArgumentTypeError(f"a lifetime must be more than 0 and at most 366 days, "
                                         f"got {text!r}")
    return seconds


def add_token_parser(sub) -> None:
    token = sub.add_parser(
        "token", help="mint a room access token (or create the secret that signs them)",
        description="Prints a token for one identity in one room (the web client takes it from "
                    "its URL: /?room=ROOM&token=TOKEN). The secret is the server's: "
                    "--secret-file, or SPATIALJAM_SECRET_FILE / SPATIALJAM_SECRET.")
    token.add_argument("--room", metavar="ROOM", help="the room the token opens")
    token.add_argument("--identity", metavar="ID",
                       help="who it is for (one connection per identity in a room)")
    token.add_argument("--name", metavar="NAME", help="display name (default: the client's)")
    token.add_argument("--grant", action="append", choices=GRANTS, metavar="GRANT",
                       help=f"one of {', '.join(GRANTS)}; repeat for more (default: "
                            f"{' and '.join(DEFAULT_GRANTS)}; admin implies all)")
    token.add_argument("--ttl", type=parse_duration, default=parse_duration("6h"),
                       metavar="DURATION", help="lifetime: 90s, 15m, 6h (default), 7d")
    token.add_argument("--secret-file", metavar="FILE", help="the file holding the secret")
    token.add_argument("--link", metavar="BASE_URL",
                       help="print a join link (BASE_URL/?room=…&token=…) instead of the token")
    token.add_argument("--new-secret", metavar="FILE",
                       help="create FILE with a fresh random secret (mode 600), then stop")


def run_token(args: argparse.Namespace) -> int:
    try:
        if args.new_secret:
            path = write_new_secret(args.new_secret)
            print(f"wrote a new secret to {path}: start the server with --secret-file {path}")
            return 0
        if not args.room or not args.identity:
            raise CliError("--room and --identity are needed to mint a token")
        secret = load_secret(args.secret_file)
    except SecretError as exc:
        raise CliError(str(exc)) from None
    if secret is None:
        raise CliError("no secret to sign with: give --secret-file FILE (create one with "
                       "--new-secret FILE) or set SPATIALJAM_SECRET_FILE")
    try:
        token = mint(secret, room=args.room, identity=args.identity,
                     grants=args.grant or DEFAULT_GRANTS, ttl_s=args.ttl, now=time.time(),
                     name=args.name)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if args.link:
        print(f"{args.link.rstrip('/')}/?{urlencode({'room': args.room, 'token': token})}")
    else:
        print(token)
    return 0
