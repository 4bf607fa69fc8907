"""TLS on the server's port (server.web.tls) and whom a proxied connection counts against
(server.web.admission.TrustedProxies): real certificates from a test CA, handshakes through
memory BIOs (no sockets)."""

from __future__ import annotations

import datetime
import ssl

import pytest
from cryptography import x509

from server.web.admission import TrustedProxies
from server.web.tls import (
    TlsError,
    TlsFiles,
    check_certificate,
    plain_http_warning,
    reload,
    server_context,
)
from tests.helpers.certs import DAY, TestCA


@pytest.fixture
def ca(tmp_path):
    return TestCA(tmp_path)


def handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> ssl.SSLObject:
    """A full handshake between the two contexts in memory; the client's side, done."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    c = client.wrap_bio(c_in, c_out, server_hostname="127.0.0.1")
    s = server.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        done = 0
        for side in (c, s):
            try:
                side.do_handshake()
                done += 1
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if done == 2:
            return c
    raise AssertionError("the handshake did not finish")


def serial(side: ssl.SSLObject) -> int:
    return x509.load_der_x509_certificate(side.getpeercert(binary_form=True)).serial_number


def test_a_client_trusting_the_ca_completes_a_modern_handshake(ca):
    issued = ca.issue("server")
    context = server_context(TlsFiles(str(issued.cert), str(issued.key)))
    client = handshake(context, ca.client_context())
    assert serial(client) == issued.serial
    assert client.version() in ("TLSv1.2", "TLSv1.3")
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_tls_1_2_and_1_3_get_forward_secret_aead_ciphers(ca, version):
    issued = ca.issue("server")
    client_context = ca.client_context()
    client_context.minimum_version = client_context.maximum_version = version
    client = handshake(server_context(TlsFiles(str(issued.cert), str(issued.key))),
                       client_context)
    name, _, _ = client.cipher()
    assert client.version() == version.name.replace("v1_", "v1.")
    assert "GCM" in name or "CHACHA20" in name
    if version == ssl.TLSVersion.TLSv1_2:
        assert name.startswith("ECDHE-")


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated")
def test_an_old_tls_client_and_a_weak_cipher_are_refused(ca):
    issued = ca.issue("server")
    context = server_context(TlsFiles(str(issued.cert), str(issued.key)))
    old = ca.client_context()
    old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(ssl.SSLError):
        handshake(context, old)
    weak = ca.client_context()
    weak.maximum_version = ssl.TLSVersion.TLSv1_2
    weak.set_ciphers("AES128-SHA:AES256-SHA")  # no forward secrecy, CBC
    with pytest.raises(ssl.SSLError):
        handshake(context, weak)


def test_each_bad_certificate_or_key_is_refused_in_one_line(ca, tmp_path):
    good = ca.issue("good")
    other = ca.issue("other")
    expired = ca.issue("expired", valid_from=-30 * DAY, valid_for=DAY)
    early = ca.issue("early", valid_from=10 * DAY)
    not_pem = tmp_path / "notes.txt"
    not_pem.write_text("not a certificate\n")
    cases = {
        "cannot read the TLS certificate": TlsFiles(str(tmp_path / "missing.pem"),
                                                    str(good.key)),
        "cannot read the TLS key": TlsFiles(str(good.cert), str(tmp_path / "missing.key")),
        "holds no PEM certificate": TlsFiles(str(not_pem), str(good.key)),
        "is not the key of the certificate": TlsFiles(str(good.cert), str(other.key)),
        "is not a PEM private key": TlsFiles(str(good.cert), str(not_pem)),
        "expired on": TlsFiles(str(expired.cert), str(expired.key)),
        "is not valid before": TlsFiles(str(early.cert), str(early.key)),
    }
    for words, files in cases.items():
        with pytest.raises(TlsError) as caught:
            server_context(files)
        assert words in str(caught.value) and "\n" not in str(caught.value), (words, caught)


def test_a_renewal_is_served_to_new_handshakes_and_a_bad_one_changes_nothing(ca, tmp_path):
    first = ca.issue("first")
    files = TlsFiles(str(first.cert), str(first.key))
    context = server_context(files)
    assert serial(handshake(context, ca.client_context())) == first.serial
    renewed = ca.issue("renewed")  # the same paths, new contents: as certbot and Caddy renew
    first.cert.write_bytes(renewed.cert.read_bytes())
    first.key.write_bytes(renewed.key.read_bytes())
    assert reload(context, files)
    assert serial(handshake(context, ca.client_context())) == renewed.serial
    stray = ca.issue("stray")
    first.key.write_bytes(stray.key.read_bytes())  # half a renewal: a key of another cert
    assert not reload(context, files)
    assert serial(handshake(context, ca.client_context())) == renewed.serial


def test_a_certificate_close_to_its_end_is_served_with_a_warning(ca, caplog):
    issued = ca.issue("short", valid_for=3 * DAY)
    leaf = check_certificate(str(issued.cert))
    assert leaf.serial_number == issued.serial
    assert any("expires on" in r.getMessage() for r in caplog.records)
    later = datetime.datetime.now(datetime.UTC) + 4 * DAY
    with pytest.raises(TlsError, match="expired on"):
        check_certificate(str(issued.cert), later)


def test_plain_http_is_warned_about_off_loopback_only():
    assert plain_http_warning("127.0.0.1", tls=False, behind_proxy=False) is None
    assert plain_http_warning("::1", tls=False, behind_proxy=False) is None
    assert plain_http_warning("localhost", tls=False, behind_proxy=False) is None
    assert plain_http_warning("0.0.0.0", tls=True, behind_proxy=False) is None
    assert plain_http_warning("0.0.0.0", tls=False, behind_proxy=True) is None
    for host in ("0.0.0.0", "::", "203.0.113.5", "jam.example.org"):
        warning = plain_http_warning(host, tls=False, behind_proxy=False)
        assert warning is not None and "refuse the microphone" in warning


def test_a_trusted_proxy_names_the_client_and_nobody_else_can():
    proxies = TrustedProxies(["10.0.0.0/8", "2001:db8::/32"])
    assert not TrustedProxies() and proxies
    header = {"X-Forwarded-For": "198.51.100.7"}
    assert proxies.client("10.1.2.3", header) == "198.51.100.7"
    assert proxies.client("::ffff:10.1.2.3", header) == "198.51.100.7"  # mapped IPv4
    assert proxies.client("2001:db8::5", header) == "198.51.100.7"
    # Not a trusted proxy: its header is the client's own word, not taken.
    assert proxies.client("192.0.2.1", header) == "192.0.2.1"
    assert TrustedProxies().client("10.1.2.3", header) == "10.1.2.3"
    # What a client wrote in the header itself lies left of what the proxies appended.
    chain = {"X-Forwarded-For": "1.2.3.4, 198.51.100.7, 10.9.9.9"}
    assert proxies.client("10.1.2.3", chain) == "198.51.100.7"
    # No usable header: X-Real-IP, else the proxy itself.
    assert proxies.client("10.1.2.3", {"X-Real-IP": "203.0.113.9"}) == "203.0.113.9"
    assert proxies.client("10.1.2.3", {}) == "10.1.2.3"
    assert proxies.client("10.1.2.3", {"X-Forwarded-For": "unknown"}) == "10.1.2.3"
    assert proxies.client("10.1.2.3", {"X-Forwarded-For": "10.0.0.1"}) == "10.1.2.3"


def test_a_node_serving_tls_tells_the_deployment_its_wss_address():
    from argparse import Namespace

    from server.routing.front import public_url

    plain = Namespace(public_url=None, host="203.0.113.5", tls_cert=None)
    assert public_url(plain, 8080) == "ws://203.0.113.5:8080/ws"
    tls = Namespace(public_url=None, host="2001:db8::5", tls_cert="fullchain.pem")
    assert public_url(tls, 443) == "wss://[2001:db8::5]:443/ws"
    told = Namespace(public_url="wss://node1.example.org/ws", host="0.0.0.0", tls_cert="x")
    assert public_url(told, 443) == "wss://node1.example.org/ws"
