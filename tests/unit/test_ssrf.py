"""Which resolved addresses deliveries may connect to (a pure decision; no sockets)."""

from __future__ import annotations

import ipaddress

import pytest

from shared.model.ssrf import IPNetwork, refusal_reason


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


def _nets(*texts: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(text) for text in texts)


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.1", "private"),
        ("10.255.255.255", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.254", "private"),
        ("192.168.1.10", "private"),
        ("100.64.0.1", "reserved"),
        ("100.127.255.254", "reserved"),
        ("169.254.169.254", "link_local"),
        ("169.254.0.1", "link_local"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("fe80::1", "link_local"),
        ("febf::1", "link_local"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
        ("::ffff:169.254.169.254", "link_local"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "reserved"),
        ("::", "reserved"),
        ("255.255.255.255", "reserved"),
        ("240.0.0.1", "reserved"),
        ("198.18.0.1", "reserved"),
        ("192.0.0.8", "reserved"),
        ("fd00:ec2::254", "reserved"),
        ("64:ff9b::a00:1", "reserved"),
        ("192.0.2.1", "private"),
        ("2001:db8::1", "private"),
    ],
)
def test_refusal_reason_refuses_non_public_addresses(address: str, reason: str) -> None:
    assert refusal_reason(_ip(address), ()) == reason


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "1.1.1.1", "172.32.0.1", "100.128.0.1", "2606:4700::1111"]
)
def test_refusal_reason_allows_public_addresses(address: str) -> None:
    assert refusal_reason(_ip(address), ()) is None


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("10.1.2.3", ("10.0.0.0/8",)),
        ("127.0.0.1", ("127.0.0.0/8",)),
        ("100.64.0.1", ("100.64.0.0/10",)),
        ("fd00::5", ("fd00::/8",)),
        ("::ffff:10.0.0.1", ("10.0.0.0/24",)),
        ("192.168.1.10", ("2001:db8::/32", "192.168.1.0/24")),
    ],
)
def test_refusal_reason_allows_addresses_inside_allowed_cidrs(
    address: str, allowed: tuple[str, ...]
) -> None:
    assert refusal_reason(_ip(address), _nets(*allowed)) is None


def test_refusal_reason_refuses_addresses_outside_allowed_cidrs() -> None:
    assert refusal_reason(_ip("10.1.0.1"), _nets("10.0.0.0/16")) == "private"


def test_refusal_reason_does_not_match_cidrs_of_the_other_ip_version() -> None:
    assert refusal_reason(_ip("::1"), _nets("127.0.0.0/8")) == "loopback"
