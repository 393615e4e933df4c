"""Unit tests run without a broker or a network: any attempt to connect or resolve fails."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import NoReturn

import pytest


def _no_network(*args: object, **kwargs: object) -> NoReturn:
    raise AssertionError(f"unit tests must not touch the network (called with {args!r})")


@pytest.fixture(name="no_network", autouse=True)
def fixture_no_network() -> Iterator[None]:
    """Event loops may still make their internal socketpair; nothing may connect or resolve."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", _no_network)
        patch.setattr(socket.socket, "connect_ex", _no_network)
        patch.setattr(socket, "create_connection", _no_network)
        patch.setattr(socket, "getaddrinfo", _no_network)
        patch.setattr(socket, "gethostbyname", _no_network)
        yield
