"""Which address is the client's: REMOTE_ADDR, or X-Forwarded-For only as far as our own proxies vouch."""

from __future__ import annotations

import pytest

from sessctl.devices import client_ip, from_asgi, from_wsgi, parse_networks, truncate


@pytest.mark.parametrize(
    ("remote", "xff", "trusted", "expected"),
    [
        ("203.0.113.5", None, (), "203.0.113.5"),
        ("203.0.113.5", "1.2.3.4", (), "203.0.113.5"),  # nobody trusted: the header is the client's word
        ("10.0.0.2", "1.2.3.4", ("10.0.0.0/8",), "1.2.3.4"),
        ("10.0.0.2", "6.6.6.6, 1.2.3.4", ("10.0.0.0/8",), "1.2.3.4"),  # leftmost is a claim
        ("10.0.0.2", "6.6.6.6, 1.2.3.4, 10.0.0.9", ("10.0.0.0/8",), "1.2.3.4"),  # two proxies of ours
        ("10.0.0.2", "garbage, 10.0.0.9", ("10.0.0.0/8",), "10.0.0.9"),
        ("203.0.113.5", "1.2.3.4", ("10.0.0.0/8",), "203.0.113.5"),  # not from our proxy
        ("::ffff:203.0.113.5", None, (), "203.0.113.5"),
        ("2001:db8::1", "[2001:db8::7]:443", ("2001:db8::/32",), "2001:db8::7"),
        (None, "1.2.3.4", (), None),
        ("not an address", None, (), None),
    ],
)
def test_client_ip(remote, xff, trusted, expected):
    assert client_ip(remote, xff, trusted) == expected


def test_truncate():
    assert truncate("203.0.113.77") == "203.0.113.0"
    assert truncate("2001:db8:1:2:3::5") == "2001:db8:1::"
    assert truncate(None) is None


def test_bad_trusted_proxy_is_named():
    with pytest.raises(ValueError, match="'10.0.0.300'"):
        parse_networks(["10.0.0.300"])


class S:
    trusted_proxies = ("127.0.0.1",)
    truncate_ip = False


def test_wsgi_and_asgi_agree():
    environ = {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "198.51.100.1", "HTTP_USER_AGENT": "ua" * 200}
    scope = {"client": ("127.0.0.1", 5000), "headers": [(b"x-forwarded-for", b"198.51.100.1"), (b"user-agent", b"ua" * 200)]}
    assert from_wsgi(S, environ) == from_asgi(S, scope)
    assert from_wsgi(S, environ).ip == "198.51.100.1" and len(from_wsgi(S, environ).user_agent) == 256
