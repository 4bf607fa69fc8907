"""``serve``'s ICE options: ``--public-ip``, ``--udp-ports``, ``--ice-server`` and
``--turn-secret-file``, each also an environment variable (:data:`ICE_ENV`), read into one
:class:`~server.media.ice.IceConfig` (checked there: :mod:`server.media.ice`).

A bad value is refused at start in one line naming the option (:class:`CliError`), the same
whether it came from the command line or the environment; the command line wins over the
environment. The workers of ``serve --workers N`` get the options on their command lines
(:func:`ice_worker_args`): the TURN secret's file path, never the secret.
"""

from __future__ import annotations

import argparse
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path

from server.errors import CliError
from server.media.ice import (
    TURN_DEFAULT_TTL_S,
    IceConfig,
    parse_ice_url,
    parse_public_ip,
    parse_udp_ports,
)

#: The environment variable of each option (a list: several values apart by commas or spaces).
ICE_ENV = {"public_ip": "SPATIALJAM_PUBLIC_IP", "udp_ports": "SPATIALJAM_UDP_PORTS",
           "ice_server": "SPATIALJAM_ICE_SERVER", "turn_secret_file": "SPATIALJAM_TURN_SECRET_FILE"}
_LISTS = ("public_ip", "ice_server")


def add_ice_args(parser: argparse.ArgumentParser) -> None:
    """Add the ICE options to ``serve``'s parser (read back with :func:`ice_config`)."""
    group = parser.add_argument_group(
        "ICE (reaching the server's media over the internet; docs/DEPLOYMENT.md)")
    group.add_argument("--public-ip", action="append", metavar="ADDR",
                       help="behind 1:1 NAT (a cloud machine): the public IPv4 or IPv6 address "
                       "the NAT maps onto this machine, offered beside each private address "
                       "in the server's ICE candidates, same port; repeat for each family "
                       f"(or {ICE_ENV['public_ip']}, comma-separated)")
    group.add_argument("--udp-ports", metavar="MIN-MAX",
                       help="bind every media connection's UDP sockets in this range, one port "
                       "per connection (a firewall then needs one rule; at least "
                       "--room-capacity ports, all >= 1024); a join past it is refused "
                       f"(or {ICE_ENV['udp_ports']}; default: any port)")
    group.add_argument("--ice-server", action="append", metavar="URL",
                       help="a STUN or TURN server, stun:HOST[:PORT], "
                       "turn:HOST[:PORT][?transport=udp|tcp] or turns:HOST[:PORT], used by the "
                       "server's peers and given to every participant in 'joined'; repeat for "
                       f"several (or {ICE_ENV['ice_server']}, comma-separated). A TURN URL "
                       "needs --turn-secret-file")
    group.add_argument("--turn-secret-file", metavar="FILE",
                       help="the TURN server's shared secret (coturn: use-auth-secret, "
                       "static-auth-secret), in a file only its owner may read: each "
                       "participant gets TURN credentials of its own, valid until its access "
                       f"token expires ({TURN_DEFAULT_TTL_S // 3600} h without tokens); no TURN "
                       f"password reaches a browser (or {ICE_ENV['turn_secret_file']})")


def _given(args: argparse.Namespace, name: str, environ: Mapping[str, str]) -> list[str]:
    """The values of option ``name``: from the command line, else from its environment
    variable (split at commas and spaces for the repeatable options)."""
    value = getattr(args, name, None)
    if value is None:
        text = environ.get(ICE_ENV[name], "").strip()
        if not text:
            return []
        value = [v for v in re.split(r"[,\s]+", text) if v] if name in _LISTS else text
    return list(value) if isinstance(value, list) else [value]


def read_turn_secret(path: str) -> bytes:
    """The TURN secret in ``path``: a regular file only its owner may read, not empty (one
    trailing line break dropped: coturn takes the secret as written after
    ``static-auth-secret=``)."""
    try:
        info = Path(path).stat()
        if not stat.S_ISREG(info.st_mode):
            raise CliError(f"--turn-secret-file: {path} is not a regular file")
        data = Path(path).read_bytes().rstrip(b"\r\n")
    except OSError as exc:
        raise CliError(f"--turn-secret-file: cannot read {path}: {exc.strerror or exc}") from None
    if info.st_mode & 0o077:
        raise CliError(f"--turn-secret-file: {path} may be read by others (mode "
                       f"{stat.S_IMODE(info.st_mode):03o}): run 'chmod 600 {path}'")
    if not data.strip():
        raise CliError(f"--turn-secret-file: {path} is empty: put the TURN server's "
                       "static-auth-secret in it")
    return data


def ice_config(args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> IceConfig:
    """The ICE options of ``serve`` (command line, else environment), checked.

    Raises
    ------
    CliError
        One line naming the option, what was wrong and what would be right.
    """
    try:
        public_ips = tuple(parse_public_ip(v) for v in _given(args, "public_ip", environ))
    except ValueError as exc:
        raise CliError(f"--public-ip {exc}") from None
    ports = _given(args, "udp_ports", environ)
    try:
        udp_ports = parse_udp_ports(ports[0], getattr(args, "room_capacity", 1)) \
            if ports else None
    except ValueError as exc:
        raise CliError(f"--udp-ports {exc}") from None
    try:
        urls = tuple(parse_ice_url(v) for v in _given(args, "ice_server", environ))
    except ValueError as exc:
        raise CliError(f"--ice-server {exc}") from None
    secret_file = _given(args, "turn_secret_file", environ)
    secret = read_turn_secret(secret_file[0]) if secret_file else None
    try:
        return IceConfig(public_ips, udp_ports, urls, secret)
    except ValueError as exc:
        raise CliError(f"--ice-server {exc}") from None


def ice_worker_args(args: argparse.Namespace,
                    environ: Mapping[str, str] = os.environ) -> list[str]:
    """The ICE options a worker of ``serve --workers N`` is started with: what the front was
    given (the TURN secret by its file's path)."""
    out = []
    for name in ICE_ENV:
        for value in _given(args, name, environ):
            out += ["--" + name.replace("_", "-"), value]
    return out
