"""Who may use this server: the token secret, and the rule for rooms without tokens.

Rooms are open (every grant, no token) only on the development default: a server listening on
loopback with no secret configured. With a secret, every connection needs an access token
(:mod:`signaling.access`), also on loopback; without one, the server refuses to listen on any
other address.

The secret comes from ``SPATIALJAM_SECRET`` (the value), or from a file named by
``--secret-file`` or ``SPATIALJAM_SECRET_FILE`` that only its owner may read (``chmod 600``).
``spatialjam token --new-secret FILE`` writes one.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import parse_qs

from signaling.access import OPEN, Access, AccessError, check_secret, verify

SECRET_ENV = "SPATIALJAM_SECRET"
SECRET_FILE_ENV = "SPATIALJAM_SECRET_FILE"


class SecretError(Exception):
    """The secret cannot be used; the message says what to do."""


def read_secret_file(path: str | Path) -> bytes:
    """The secret in ``path``: owner-only permissions, at least 32 bytes (trailing newline
    dropped)."""
    path = Path(path)
    try:
        info = path.stat()
        data = path.read_bytes().rstrip(b"\r\n")
    except OSError as exc:
        raise SecretError(f"cannot read the secret file {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise SecretError(f"the secret file {path} is not a regular file")
    if info.st_mode & 0o077:
        raise SecretError(f"the secret file {path} may be read by others "
                          f"(mode {stat.S_IMODE(info.st_mode):03o}): run 'chmod 600 {path}'")
    try:
        return check_secret(data)
    except ValueError as exc:
        raise SecretError(f"{path}: {exc}") from None


def load_secret(secret_file: str | None = None,
                environ: Mapping[str, str] = os.environ) -> bytes | None:
    """The configured secret, or None when none is configured."""
    if secret_file:
        return read_secret_file(secret_file)
    if environ.get(SECRET_ENV):
        try:
            return check_secret(environ[SECRET_ENV].encode())
        except ValueError as exc:
            raise SecretError(f"{SECRET_ENV}: {exc}") from None
    if environ.get(SECRET_FILE_ENV):
        return read_secret_file(environ[SECRET_FILE_ENV])
    return None


def write_new_secret(path: str | Path) -> Path:
    """Create ``path`` holding a fresh random secret, readable by its owner only."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise SecretError(f"{path} exists already: keep it, or remove it first (every token "
                          "signed with it stops working)") from None
    except OSError as exc:
        raise SecretError(f"cannot create {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(48) + "\n")
    return path


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is this machine's loopback only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AccessPolicy:
    """The server's rule: open rooms (``secret`` None) or tokens signed with ``secret``."""

    def __init__(self, secret: bytes | None) -> None:
        self.secret = secret

    @property
    def tokens_required(self) -> bool:
        return self.secret is not None

    @classmethod
    def for_listening(cls, host: str, secret: bytes | None) -> AccessPolicy:
        """The policy for a server on ``host``; refuses an open server off loopback."""
        if secret is None and not is_loopback(host):
            raise SecretError(
                f"refusing to listen on {host} without a token secret: anyone who reaches it "
                f"could enter any room. Create one with 'spatialjam token --new-secret FILE' "
                f"and start with --secret-file FILE (or {SECRET_FILE_ENV}/{SECRET_ENV})")
        return cls(secret)

    def check(self, token: str | None, now: float) -> Access:
        """The access a token gives (every grant in open rooms), or :class:`AccessError`."""
        if self.secret is None:
            return OPEN
        return verify(self.secret, token, now)

    def for_request(self, path: str, now: float) -> Access:
        """The access of an HTTP request whose query string carries ``token=``."""
        return self.check(token_in(path), now)


def token_in(path: str) -> str | None:
    """The ``token`` in a request path's query string, if any."""
    query = path.split("?", 1)[1] if "?" in path else ""
    try:
        values = parse_qs(query, max_num_fields=16).get("token") if query else None
    except ValueError:  # more fields than any client sends
        return None
    return values[0] if values else None


__all__ = ["AccessError", "AccessPolicy", "SecretError", "load_secret", "write_new_secret"]
