"""No socket is ever connected to a refused address, on uvloop (what the services run) and on
asyncio's own loop, through the real threaded resolver.

The witness is CPython's audit hook: every ``socket.connect`` and ``socket.getaddrinfo`` of
the process raises an audit event, whichever loop drives it (the client connects through
aiohappyeyeballs, which opens Python sockets and hands them to ``loop.sock_connect``). A
positive control shows the hook sees the loop's connects, so an empty list means none
happened. Every address involved is a loopback one: if the guard failed, nothing would leave
the machine. The unit tests in tests/unit/test_sender.py refuse the same way with
``socket.connect`` patched out, on the default loop only.
"""

from __future__ import annotations

import asyncio
import ipaddress
import sys
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvloop

from shared.delivery.http_client import WebhookClient
from shared.model.errors import RefusedDestination
from shared.model.ssrf import IPNetwork
from tests.support.loopback import read_http_request
from tests.support.resolvers import StaticResolver

LoopFactory = Callable[[], asyncio.AbstractEventLoop]
LOOPS = pytest.mark.parametrize(
    "new_loop", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"]
)
NOTHING_ALLOWED: tuple[IPNetwork, ...] = ()
ONLY_127_0_0_1 = (ipaddress.ip_network("127.0.0.1/32"),)
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


@dataclass
class SocketAudit:
    """What the process's sockets did while ``recording``."""

    recording: bool = False
    connects: list[tuple[Any, ...]] = field(default_factory=list)
    lookups: list[str] = field(default_factory=list)

    def hook(self, event: str, args: tuple[Any, ...]) -> None:
        if not self.recording:
            return
        if event == "socket.connect":
            self.connects.append(tuple(args[1]))
        elif event == "socket.getaddrinfo":
            self.lookups.append(str(args[0]))


_AUDIT = SocketAudit()
_hooked = False


@pytest.fixture(name="audit")
def fixture_audit() -> Iterator[SocketAudit]:
    """Records connects and lookups during the test. An audit hook cannot be removed, so one
    is installed for the whole session and records only while a test asks it to."""
    global _hooked  # noqa: PLW0603 - once per process, as audit hooks are
    if not _hooked:
        sys.addaudithook(_AUDIT.hook)
        _hooked = True
    _AUDIT.connects.clear()
    _AUDIT.lookups.clear()
    _AUDIT.recording = True
    yield _AUDIT
    _AUDIT.recording = False


def run_on(new_loop: LoopFactory, scenario: Coroutine[Any, Any, None]) -> None:
    with asyncio.Runner(loop_factory=new_loop) as runner:
        runner.run(scenario)


async def post_to_a_receiver(
    url: str, allowed: tuple[IPNetwork, ...], *, resolver: StaticResolver | None = None
) -> tuple[int, BaseException | None]:
    """POST to ``url`` (``{port}`` filled in) with a receiver on 127.0.0.1 at that port: the
    number of requests it got, and the client's failure if any."""
    requests = 0

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal requests
        await read_http_request(reader)
        requests += 1
        writer.write(OK)
        await writer.drain()
        writer.close()

    receiver = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = receiver.sockets[0].getsockname()[1]
    client = WebhookClient(allowed, timeout_s=5.0, resolver=resolver)
    failure: BaseException | None = None
    try:
        await client.post(url.format(port=port), {}, b"{}")
    except (RefusedDestination, OSError) as exc:
        failure = exc
    finally:
        await client.close()
        receiver.close()
        await receiver.wait_closed()
    return requests, failure


def deliver(new_loop: LoopFactory, *args: Any, **kwargs: Any) -> tuple[int, BaseException | None]:
    outcome: list[tuple[int, BaseException | None]] = []

    async def scenario() -> None:
        outcome.append(await post_to_a_receiver(*args, **kwargs))

    run_on(new_loop, scenario())
    return outcome[0]


@LOOPS
def test_the_audit_sees_the_loops_connects(new_loop: LoopFactory, audit: SocketAudit) -> None:
    """The positive control: an allowed delivery's connect is recorded, on either loop."""
    requests, failure = deliver(new_loop, "http://localhost:{port}/hook", ONLY_127_0_0_1)

    assert (requests, failure) == (1, None)
    assert [address for address, _ in audit.connects] == ["127.0.0.1"]


@LOOPS
@pytest.mark.parametrize(
    ("host", "looked_up"),
    [("localhost", ["localhost"]), ("127.0.0.1", [])],
    ids=["name-through-the-threaded-resolver", "ip-literal"],
)
def test_refused_destination_opens_no_socket(
    new_loop: LoopFactory, audit: SocketAudit, host: str, looked_up: list[str]
) -> None:
    """Loopback is not allowed; ``localhost`` is looked up by the system's getaddrinfo."""
    requests, failure = deliver(new_loop, f"http://{host}:{{port}}/hook", NOTHING_ALLOWED)

    assert isinstance(failure, RefusedDestination)
    assert failure.address == "127.0.0.1"
    assert audit.lookups == looked_up
    assert audit.connects == []
    assert requests == 0


@LOOPS
def test_refused_address_of_a_mixed_answer_is_never_connected_to(
    new_loop: LoopFactory, audit: SocketAudit
) -> None:
    """127.0.0.2 comes first and would be tried first; only 127.0.0.1 is allowed."""
    resolver = StaticResolver("127.0.0.2", "127.0.0.1")

    requests, failure = deliver(
        new_loop, "http://hooks.example:{port}/hook", ONLY_127_0_0_1, resolver=resolver
    )

    assert (requests, failure) == (1, None)
    assert [address for address, _ in audit.connects] == ["127.0.0.1"]
