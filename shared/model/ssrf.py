"""Which destination addresses deliveries may connect to. Pure; no I/O.

Decided on the resolved address, after DNS, so a hostname cannot smuggle a private address
past the check; the webhook client applies it where it connects
(``shared.delivery.http_client``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Ranges refused even though some are "global" by the IANA tables.
_ALWAYS_REFUSED: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(net)
    for net in (
        "0.0.0.0/8",
        "100.64.0.0/10",  # CGNAT
        "169.254.0.0/16",  # link-local, cloud metadata
        "192.0.0.0/24",
        "198.18.0.0/15",
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",
        "fd00:ec2::254/128",  # AWS IMDS over IPv6
        # IPv6 forms that embed an IPv4 address, which may be a private one:
        "64:ff9b::/96",  # NAT64
        "64:ff9b:1::/48",  # local-use NAT64
        "2002::/16",  # 6to4
        "::/96",  # IPv4-compatible (deprecated)
        "::ffff:0:0:0/96",  # SIIT
        "fec0::/10",  # site-local (deprecated)
        "ff00::/8",
    )
)


def refusal_reason(address: IPAddress, allowed: Iterable[IPNetwork]) -> str | None:
    """None when ``address`` may be connected to; otherwise why it may not."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address.version == net.version and address in net for net in allowed):
        return None
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link_local"
    if address.is_multicast:
        return "multicast"
    for net in _ALWAYS_REFUSED:
        if address.version == net.version and address in net:
            return "reserved"
    if address.is_private or not address.is_global:
        return "private"
    return None
