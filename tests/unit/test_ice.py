"""The operator's ICE options without I/O (server/media/ice.py, server/cli/ice_args.py): URLs,
port ranges, public addresses, TURN credentials, and the public address in an answer."""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import ipaddress
import os

import pytest

from server.cli.ice_args import ice_config, ice_worker_args, read_turn_secret
from server.errors import CliError
from server.media.ice import (
    TURN_DEFAULT_TTL_S,
    IceConfig,
    IceUrl,
    advertise_public,
    parse_ice_url,
    parse_public_ip,
    parse_udp_ports,
    turn_credentials,
)
from signaling.server_messages import IceServer
from signaling.wire import encode

# -- URLs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "url"), [
    ("stun:stun.example.org", IceUrl("stun", "stun.example.org", 3478)),
    ("stun:198.51.100.7:19302", IceUrl("stun", "198.51.100.7", 19302)),
    ("turn:turn.example.org", IceUrl("turn", "turn.example.org", 3478, "udp")),
    ("turn:turn.example.org:3479?transport=tcp", IceUrl("turn", "turn.example.org", 3479, "tcp")),
    ("turns:turn.example.org", IceUrl("turns", "turn.example.org", 5349, "tcp")),
    ("turns:turn.example.org:443?transport=tcp", IceUrl("turns", "turn.example.org", 443, "tcp")),
    ("turn:[2001:db8::1]:3478", IceUrl("turn", "2001:db8::1", 3478, "udp")),
])
def test_ice_urls_parse_with_the_rfc_defaults(text, url):
    assert parse_ice_url(text) == url


def test_an_ice_url_is_written_back_whole():
    assert str(parse_ice_url("turn:[2001:db8::1]")) == "turn:[2001:db8::1]:3478?transport=udp"
    assert str(parse_ice_url("stun:stun.example.org")) == "stun:stun.example.org:3478"


@pytest.mark.parametrize(("text", "words"), [
    ("http://stun.example.org", "not a STUN or TURN URL"),
    ("stun:", "not a STUN or TURN URL"),
    ("stun:stun.example.org:99999", "not in 1..65535"),
    ("stun:stun.example.org:0", "not in 1..65535"),
    ("stun:stun.example.org?transport=udp", "takes no ?transport"),
    ("stuns:stun.example.org", "stuns"),
    ("turn:turn.example.org?transport=sctp", "udp or tcp"),
    ("turns:turn.example.org?transport=udp", "TLS on TCP"),
    ("turn:ada:hunter2@turn.example.org", "carries credentials"),
    ("turn:[12345::1::2]", "not an IPv6 address"),
    ("turn:-bad-.example.org", "not a host name"),
])
def test_bad_ice_urls_are_refused_in_words(text, words):
    with pytest.raises(ValueError, match=words.replace("?", r"\?").replace(".", r"\.")):
        parse_ice_url(text)


# -- port ranges and public addresses --------------------------------------------------------


def test_a_port_range_is_both_ends_included():
    assert parse_udp_ports("40000-40999", at_least=16) == (40000, 40999)
    assert parse_udp_ports(" 50000 - 50000 ") == (50000, 50000)


@pytest.mark.parametrize(("text", "words"), [
    ("40000", "not a port range"),
    ("40000:40010", "not a port range"),
    ("a-b", "not a port range"),
    ("40010-40000", "inverted"),
    ("80-2000", "privileged"),
    ("0-1023", "privileged"),
    ("60000-70000", "above 65535"),
    ("40000-40003", "holds 4 ports, fewer than the 16"),
])
def test_bad_port_ranges_are_refused_in_words(text, words):
    with pytest.raises(ValueError, match=words):
        parse_udp_ports(text, at_least=16)


def test_public_addresses_of_both_families_parse():
    assert parse_public_ip("203.0.113.9") == ipaddress.IPv4Address("203.0.113.9")
    assert parse_public_ip("2001:db8::9") == ipaddress.IPv6Address("2001:db8::9")


@pytest.mark.parametrize("text", ["203.0.113", "example.org", "127.0.0.1", "::1", "0.0.0.0",
                                  "fe80::1", "224.0.0.1", ""])
def test_addresses_that_cannot_be_public_are_refused(text):
    with pytest.raises(ValueError):
        parse_public_ip(text)


# -- TURN credentials ------------------------------------------------------------------------


def test_turn_credentials_are_coturns_rest_scheme():
    # Computed apart: printf '%s' '1700000000:alice' | openssl dgst -sha1 -hmac north -binary
    #   | base64
    assert turn_credentials(b"north", "alice", 1_700_000_000) == (
        "1700000000:alice", "Cd/49soE35ICqcJF/bCTn8Z4OyE=")


def test_turn_credentials_depend_on_the_secret_identity_and_expiry():
    base = turn_credentials(b"north", "alice", 1_700_000_000)[1]
    assert turn_credentials(b"south", "alice", 1_700_000_000)[1] != base
    assert turn_credentials(b"north", "bob", 1_700_000_000)[1] != base
    assert turn_credentials(b"north", "alice", 1_700_000_001)[1] != base


def test_a_turn_identity_with_a_colon_is_refused():
    with pytest.raises(ValueError, match="no ':'"):
        turn_credentials(b"north", "a:b", 1)


def config() -> IceConfig:
    return IceConfig(urls=(parse_ice_url("stun:stun.example.org"),
                           parse_ice_url("turn:turn.example.org"),
                           parse_ice_url("turns:turn.example.org")), turn_secret=b"north")


def test_joined_gets_stun_apart_and_turn_with_its_own_credential_until_its_token_ends():
    stun, turn = config().ice_servers("alice", expires_at=1_700_000_000.0, now=1_699_990_000)
    assert stun == IceServer(urls=("stun:stun.example.org:3478",))
    assert turn.urls == ("turn:turn.example.org:3478?transport=udp",
                         "turns:turn.example.org:5349?transport=tcp")
    assert turn.username == "1700000000:alice"
    expected = hmac.new(b"north", b"1700000000:alice", hashlib.sha1).digest()
    assert base64.b64decode(turn.credential) == expected


def test_without_a_token_a_turn_credential_lasts_the_default():
    _, turn = config().ice_servers("p-1", expires_at=None, now=1_000.0)
    assert turn.username == f"{1_000 + TURN_DEFAULT_TTL_S}:p-1"


def test_stun_only_goes_out_without_credentials():
    servers = IceConfig(urls=(parse_ice_url("stun:stun.example.org"),)).ice_servers("a", None, 0)
    assert '"username"' not in encode(servers[0]) and '"credential"' not in encode(servers[0])


def test_no_ice_servers_by_default():
    assert IceConfig().ice_servers("a", None, 0) == ()


def test_a_turn_url_without_a_secret_is_refused():
    with pytest.raises(ValueError, match="--turn-secret-file"):
        IceConfig(urls=(parse_ice_url("turn:turn.example.org"),))


# -- a server whose media no one outside can reach ------------------------------------------


def test_private_addresses_alone_without_public_ip_or_turn_are_warned_about():
    warning = IceConfig().private_only_warning(["10.0.0.2", "fd00::2"])
    assert warning is not None
    assert "(10.0.0.2, fd00::2) are all private" in warning and "--public-ip" in warning


@pytest.mark.parametrize("config", [
    IceConfig(public_ips=(parse_public_ip("203.0.113.10"),)),
    IceConfig(urls=(parse_ice_url("turns:turn.example.org"),), turn_secret=b"s"),
])
def test_a_public_address_or_a_turn_relay_leaves_nothing_to_warn_about(config):
    assert config.private_only_warning(["10.0.0.2"]) is None


@pytest.mark.parametrize("addresses", [["10.0.0.2", "2001:4860::8"], ["8.8.4.4"], []])
def test_a_machine_with_a_public_address_or_none_known_is_not_warned_about(addresses):
    assert IceConfig(urls=(parse_ice_url("stun:stun.example.org"),)).private_only_warning(
        addresses) is None


# -- the public address in an answer ---------------------------------------------------------

ANSWER = "\r\n".join([
    "v=0", "m=audio 9 UDP/TLS/RTP/SAVPF 96", "c=IN IP4 0.0.0.0",
    "a=candidate:aaa 1 udp 2130706431 10.0.0.5 40001 typ host",
    "a=candidate:bbb 1 udp 2130706431 fd00::5 40001 typ host",
    "a=candidate:ccc 1 udp 1694498815 198.51.100.20 51000 typ srflx raddr 10.0.0.5 rport 40001",
    "a=candidate:ddd 1 udp 2130706431 127.0.0.1 40002 typ host",
    "a=candidate:eee 1 udp 2130706431 9.9.9.9 40003 typ host",  # a global address
    "a=end-of-candidates", ""])


def candidates(sdp: str) -> list[list[str]]:
    return [line.split(" ") for line in sdp.split("\r\n") if line.startswith("a=candidate:")]


def test_a_public_address_joins_each_private_host_candidate_of_its_family_same_port():
    out = advertise_public(ANSWER, (ipaddress.ip_address("203.0.113.9"),))
    added = [c for c in candidates(out) if c[4] == "203.0.113.9"]
    assert [(c[1], c[2], c[5], c[7]) for c in added] == [("1", "udp", "40001", "host")]
    assert int(added[0][3]) == 2130706431 - 1  # the private address stays first where it works
    assert added[0][0] not in {c[0] for c in candidates(ANSWER)}  # a foundation of its own
    assert len(added[0][0]) <= len("a=candidate:") + 32  # RFC 8445: at most 32 characters
    assert out.index("10.0.0.5 40001") < out.index("203.0.113.9") < out.index("fd00::5")


def test_public_addresses_of_two_families_each_join_their_own():
    out = advertise_public(ANSWER, (ipaddress.ip_address("203.0.113.9"),
                                    ipaddress.ip_address("2001:db8::9")))
    assert {(c[4], c[5]) for c in candidates(out)} - {(c[4], c[5]) for c in candidates(ANSWER)} \
        == {("203.0.113.9", "40001"), ("2001:db8::9", "40001")}


def test_reflexive_loopback_and_public_candidates_are_left_alone():
    out = advertise_public(ANSWER, (ipaddress.ip_address("203.0.113.9"),))
    assert len(candidates(out)) == len(candidates(ANSWER)) + 1
    assert advertise_public(ANSWER, ()) == ANSWER


# -- the options, from the command line and the environment ----------------------------------


def namespace(**given) -> argparse.Namespace:
    values = {"public_ip": None, "udp_ports": None, "ice_server": None,
              "turn_secret_file": None, "room_capacity": 2}
    return argparse.Namespace(**{**values, **given})


@pytest.fixture
def secret_file(tmp_path):
    path = tmp_path / "turn.secret"
    path.write_text("north\n")
    os.chmod(path, 0o600)
    return path


def test_the_environment_gives_what_the_command_line_leaves_out(secret_file):
    env = {"SPATIALJAM_PUBLIC_IP": "203.0.113.9, 2001:db8::9",
           "SPATIALJAM_UDP_PORTS": "40000-40001",
           "SPATIALJAM_ICE_SERVER": "stun:stun.example.org turn:turn.example.org",
           "SPATIALJAM_TURN_SECRET_FILE": str(secret_file)}
    ice = ice_config(namespace(), env)
    assert [str(a) for a in ice.public_ips] == ["203.0.113.9", "2001:db8::9"]
    assert ice.udp_ports == (40000, 40001) and ice.turn_secret == b"north"
    assert len(ice.urls) == 2
    assert ice_config(namespace(udp_ports="41000-41001"), env).udp_ports == (41000, 41001)


def test_workers_get_the_options_and_the_secrets_path_not_the_secret(secret_file):
    args = namespace(public_ip=["203.0.113.9"], udp_ports="40000-40009",
                     ice_server=["turn:turn.example.org"], turn_secret_file=str(secret_file))
    line = ice_worker_args(args, {})
    assert line == ["--public-ip", "203.0.113.9", "--udp-ports", "40000-40009",
                    "--ice-server", "turn:turn.example.org", "--turn-secret-file",
                    str(secret_file)]
    assert "north" not in " ".join(line)


@pytest.mark.parametrize(("given", "words"), [
    ({"public_ip": ["203.0.113"]}, "--public-ip '203.0.113' is not"),
    ({"udp_ports": "40001-40000"}, "--udp-ports '40001-40000' is inverted"),
    ({"udp_ports": "40000-40000"}, "fewer than the 2"),
    ({"ice_server": ["turn:turn.example.org"]}, "--ice-server turn:.* --turn-secret-file"),
])
def test_bad_options_are_one_line_naming_the_option(given, words):
    with pytest.raises(CliError, match=words) as info:
        ice_config(namespace(**given), {})
    assert "\n" not in str(info.value)


def test_an_unreadable_empty_or_shared_secret_file_is_refused(tmp_path, secret_file):
    with pytest.raises(CliError, match="cannot read"):
        read_turn_secret(str(tmp_path / "missing"))
    with pytest.raises(CliError, match="not a regular file"):
        read_turn_secret(str(tmp_path))
    secret_file.write_text("\n")
    with pytest.raises(CliError, match="is empty"):
        read_turn_secret(str(secret_file))
    secret_file.write_text("north\n")
    os.chmod(secret_file, 0o644)
    with pytest.raises(CliError, match="chmod 600"):
        read_turn_secret(str(secret_file))
