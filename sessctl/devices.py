"""What a device is, when device tracking is on: the client's address and user agent.

Off by default (``Settings.track_devices``): with it off nothing here runs and
nothing about the client is stored. On, the side row of a logged-in session
keeps the client's IP address and user agent (cut to ``UA_LENGTH``), with the
session's creation and last-seen times.

The address is ``REMOTE_ADDR`` unless that is one of ``trusted_proxies``;
then ``X-Forwarded-For`` is read from the right, skipping the trusted
proxies, and the first address no proxy of ours added is the client's.
A client can put anything in that header, so entries left of it are never
believed. ``truncate_ip`` keeps only the network (/24 for IPv4, /48 for
IPv6).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

UA_LENGTH = 256
IP_LENGTH = 45  # the longest textual IPv6 address (with an embedded IPv4)


@dataclass(frozen=True, slots=True)
class Device:
    ip: str | None
    user_agent: str | None


def parse_networks(values: Iterable[str]) -> tuple[Any, ...]:
    """``("10.0.0.0/8", "127.0.0.1")`` -> networks; ValueError naming a bad entry."""
    out = []
    for value in values:
        try:
            out.append(ipaddress.ip_network(str(value).strip(), strict=False))
        except ValueError:
            raise ValueError(f"trusted_proxies: {value!r} is not an IP address or network") from None
    return tuple(out)


@lru_cache(maxsize=16)
def _networks(values: tuple[str, ...]) -> tuple[Any, ...]:
    return parse_networks(values)


def _address(text: str | None) -> Any:
    if not text:
        return None
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1:text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def client_ip(remote_addr: str | None, forwarded_for: str | None, trusted: tuple[str, ...]) -> str | None:
    """The client's address: REMOTE_ADDR, or through trusted proxies the X-Forwarded-For entry they vouch for."""
    current = _address(remote_addr)
    if current is None:
        return None
    networks = _networks(tuple(trusted)) if trusted else ()
    if networks and forwarded_for:
        hops = [h for h in (part.strip() for part in forwarded_for.split(",")) if h]
        while hops and any(current in net for net in networks if net.version == current.version):
            nxt = _address(hops.pop())
            if nxt is None:
                break  # garbage from beyond our proxies: stop at the last address we trust
            current = nxt
    if isinstance(current, ipaddress.IPv6Address) and current.ipv4_mapped is not None:
        current = current.ipv4_mapped
    return str(current)


def truncate(ip: str | None) -> str | None:
    """Keep the network only: 203.0.113.77 -> 203.0.113.0; 2001:db8:1:2::5 -> 2001:db8:1::."""
    if ip is None:
        return None
    addr = ipaddress.ip_address(ip)
    prefix = 24 if addr.version == 4 else 48
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False).network_address)


def user_agent(value: str | None) -> str | None:
    if not value:
        return None
    return value[:UA_LENGTH]


def from_parts(settings: Any, remote_addr: str | None, forwarded_for: str | None, agent: str | None) -> Device:
    ip = client_ip(remote_addr, forwarded_for, tuple(getattr(settings, "trusted_proxies", ()) or ()))
    if ip is not None and getattr(settings, "truncate_ip", False):
        ip = truncate(ip)
    return Device(ip, user_agent(agent))


def from_wsgi(settings: Any, environ: Mapping[str, Any]) -> Device:
    return from_parts(
        settings, environ.get("REMOTE_ADDR"), environ.get("HTTP_X_FORWARDED_FOR"), environ.get("HTTP_USER_AGENT")
    )


def from_asgi(settings: Any, scope: Mapping[str, Any]) -> Device:
    headers: dict[str, str] = {}
    for name, value in scope.get("headers") or ():
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    client = scope.get("client")
    remote = client[0] if client else None
    return from_parts(settings, remote, headers.get("x-forwarded-for"), headers.get("user-agent"))


def describe(ip: str | None, agent: str | None, width: int = 40) -> str:
    """``203.0.113.7 Firefox/128.0 (X11; Linux x86_64)…`` for a table cell."""
    parts = [p for p in (ip, agent) if p]
    text = " ".join(parts)
    return text if len(text) <= width else text[: width - 1] + "…"
