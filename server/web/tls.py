"""HTTPS and WSS on the server's own port: ``serve --tls-cert FILE --tls-key FILE``.

A browser opens the microphone (and WebCodecs) only in a secure context: a page from
``http://127.0.0.1`` is one, a page over plain HTTP from anywhere else is not. So a server
that players reach over the internet serves its page, ``/healthz``, ``/metrics``, downloads
and ``/ws`` (as WSS) over TLS, on the one port it listens on (through the front of ``serve
--workers N`` too: the front ends TLS, its workers listen on loopback).

- **Settings**: TLS 1.2 and 1.3 only; for TLS 1.2 only forward-secret AEAD suites (ECDHE with
  AES-GCM or ChaCha20-Poly1305); no compression, no renegotiation, no session tickets that
  outlive a key; no client certificates asked for (one offered is not looked at).
- **Checked at start**, each in one line: a file that cannot be read, a certificate that is
  not PEM, has expired or is not valid yet, a key that is not the certificate's.
- **Renewed without a restart**: on SIGHUP the files are read again (certbot, Caddy and other
  ACME clients replace them in place); new connections get the new certificate, open ones
  keep theirs. A renewal that fails its checks is refused in the log and the old certificate
  serves on.

No I/O happens here but reading the two files.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import logging
import signal
import ssl
from dataclasses import dataclass

from cryptography import x509

from server.web.access import is_loopback

log = logging.getLogger("spatialjam.tls")

#: TLS 1.2's suites: forward secrecy (ECDHE) and AEAD ciphers only (Mozilla's "intermediate"
#: list, less its DHE suites). TLS 1.3's are all of that kind; OpenSSL's defaults stand.
TLS12_CIPHERS = ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
                 "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
                 "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305")
#: A certificate this close to its end is warned about at start and at each reload.
EXPIRY_WARNING = datetime.timedelta(days=14)


class TlsError(Exception):
    """A certificate or key the server cannot serve with, in words."""


@dataclass(frozen=True)
class TlsFiles:
    """The PEM certificate chain (leaf first) and its private key."""

    cert: str
    key: str


def tls_files(args: argparse.Namespace) -> TlsFiles | None:
    """The files ``serve --tls-cert FILE --tls-key FILE`` names (None without them);
    :class:`TlsError` when only one is given."""
    cert, key = getattr(args, "tls_cert", None), getattr(args, "tls_key", None)
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise TlsError("TLS needs both --tls-cert FILE and --tls-key FILE (or "
                       "SPATIALJAM_TLS_CERT and SPATIALJAM_TLS_KEY)")
    return TlsFiles(cert, key)


def server_context(files: TlsFiles, now: datetime.datetime | None = None) -> ssl.SSLContext:
    """A server-side context with this module's settings, serving ``files`` (checked at
    ``now``, default the present); :class:`TlsError` says what is wrong with them."""
    context = _settings()
    _load(context, files, now)
    return context


def reload(context: ssl.SSLContext, files: TlsFiles,
           now: datetime.datetime | None = None) -> bool:
    """Read ``files`` again into ``context`` (new handshakes use them); False, logged, with the
    context left as it was, when they do not pass the checks."""
    try:
        _load(_settings(), files, now)  # on a scratch context first: a bad pair changes nothing
        leaf = _load(context, files, now)
    except TlsError as exc:
        log.error("TLS certificate not reloaded, the one loaded before serves on: %s", exc)
        return False
    log.info("TLS certificate reloaded from %s (valid until %s)", files.cert,
             leaf.not_valid_after_utc.strftime("%Y-%m-%d %H:%M UTC"))
    return True


def reload_on_sighup(loop: asyncio.AbstractEventLoop, context: ssl.SSLContext,
                     files: TlsFiles) -> None:
    """Reload ``files`` into ``context`` on each SIGHUP."""
    loop.add_signal_handler(signal.SIGHUP, reload, context, files)


def _settings() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= (ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
                        | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_TICKET)
    context.verify_mode = ssl.CERT_NONE  # players prove who they are with access tokens
    context.set_alpn_protocols(["http/1.1"])
    return context


def _load(context: ssl.SSLContext, files: TlsFiles,
          now: datetime.datetime | None) -> x509.Certificate:
    leaf = check_certificate(files.cert, now)
    try:
        with open(files.key, "rb"):
            pass
    except OSError as exc:
        raise TlsError(f"cannot read the TLS key {files.key}: {exc.strerror or exc}") from None
    try:
        context.load_cert_chain(files.cert, files.key)
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc):
            raise TlsError(f"the TLS key {files.key} is not the key of the certificate "
                           f"{files.cert}") from None
        raise TlsError(f"{files.key} is not a PEM private key for {files.cert} "
                       f"({exc.reason or exc})") from None
    return leaf


def check_certificate(path: str, now: datetime.datetime | None = None) -> x509.Certificate:
    """The first (leaf) certificate of the PEM file ``path``, if it is valid at ``now``;
    :class:`TlsError` otherwise. One close to its end is warned about in the log."""
    now = now or datetime.datetime.now(datetime.UTC)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise TlsError(f"cannot read the TLS certificate {path}: {exc.strerror or exc}") \
            from None
    try:
        leaf = x509.load_pem_x509_certificates(data)[0]
    except ValueError:
        raise TlsError(f"{path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)") \
            from None
    ends, starts = leaf.not_valid_after_utc, leaf.not_valid_before_utc
    if ends <= now:
        raise TlsError(f"the TLS certificate {path} expired on {ends:%Y-%m-%d %H:%M} UTC: "
                       "renew it (then SIGHUP reloads it without a restart)")
    if starts > now:
        raise TlsError(f"the TLS certificate {path} is not valid before "
                       f"{starts:%Y-%m-%d %H:%M} UTC (is this machine's clock right?)")
    if ends - now < EXPIRY_WARNING:
        log.warning("the TLS certificate %s expires on %s UTC: renew it soon", path,
                    f"{ends:%Y-%m-%d %H:%M}")
    return leaf


def plain_http_warning(host: str, tls: bool, behind_proxy: bool) -> str | None:
    """What to warn about when the server listens on ``host`` without TLS of its own and no
    trusted reverse proxy in front (which would end TLS for it): a page from anywhere but this
    machine is then no secure context, and browsers refuse it the microphone. None on
    loopback, with TLS, or behind a proxy."""
    if tls or behind_proxy or is_loopback(host):
        return None
    return (f"listening on {host} over plain HTTP: browsers on other machines will refuse the "
            "microphone (a secure context needs HTTPS); give --tls-cert and --tls-key, or put "
            "a TLS reverse proxy in front with --trusted-proxy (docs/DEPLOYMENT.md)")
