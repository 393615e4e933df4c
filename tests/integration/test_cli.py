"""The ``clickhook`` command against the real broker, run as operators run it: a process
(``python -m shared.cli``, what the ``clickhook`` console script calls), its stdout, its
stderr and its exit status."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import NewTopic

from shared.kafka.clients import create_producer, ensure_topics, topic_specs
from shared.kafka.endpoint_store import EndpointStore
from shared.model.messages import DeadLetter, DeliveryEnvelope, ReplayJob, decode_envelope, encode
from shared.model.topics import Topics
from shared.ops.settings import Settings, load_settings
from tests.support.endpoints import endpoint_to
from tests.support.services import ROOT, service_env
from tests.support.topics import read_records

pytestmark = pytest.mark.kafka

NOW_MS = int(time.time() * 1000)
HOUR_MS = 3_600_000


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str

    def json_lines(self) -> list[dict[str, object]]:
        return [orjson.loads(line) for line in self.out.splitlines()]


Clickhook = Callable[..., Awaitable[Run]]


def assert_failed_with_one_line(run: Run, starting: str) -> None:
    """Exit status 1, nothing on stdout, one line on stderr that says what."""
    assert run.code == 1, run
    assert run.out == ""
    assert run.err.count("\n") == 1, run.err
    assert run.err.startswith(starting), run.err


@pytest.fixture(name="cli_settings")
def fixture_cli_settings(kafka_bootstrap: str, prefix: str) -> Settings:
    return load_settings(service_env(kafka_bootstrap, prefix))


async def start_clickhook(env: dict[str, str], *args: str) -> asyncio.subprocess.Process:
    """``clickhook …`` as a process (``python -m shared.cli``), stdout and stderr piped."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "shared.cli",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def run_clickhook(env: dict[str, str], *args: str) -> Run:
    process = await start_clickhook(env, *args)
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return Run(process.returncode, out.decode(), err.decode())


@pytest.fixture(name="clickhook")
def fixture_clickhook(kafka_bootstrap: str, prefix: str) -> Clickhook:
    env = service_env(kafka_bootstrap, prefix)

    async def run(*args: str) -> Run:
        return await run_clickhook(env, *args)

    return run


@pytest.fixture(name="producer")
async def fixture_producer(cli_settings: Settings) -> AsyncIterator[AIOKafkaProducer]:
    await ensure_topics(cli_settings)
    producer = create_producer(cli_settings)
    await producer.start()
    yield producer
    await producer.stop()


def letter(
    endpoint_id: str,
    n: int,
    *,
    account_id: str = "acc_1",
    reason: str = "exhausted",
    dead_at_ms: int = NOW_MS - HOUR_MS,
) -> DeadLetter:
    envelope = DeliveryEnvelope(
        webhook_id=f"msg_{endpoint_id}_{n}",
        event_id=f"evt_{n}",
        endpoint_id=endpoint_id,
        account_id=account_id,
        event={"id": f"evt_{n}", "type": "link.clicked"},
        attempts_made=4,
        tier=3,
        due_at_ms=0,
    )
    return msgspec.convert(
        {"reason": reason, "dead_at_ms": dead_at_ms, "envelope": msgspec.to_builtins(envelope)},
        DeadLetter,
    )


async def put_letters(
    settings: Settings, producer: AIOKafkaProducer, letters: list[DeadLetter]
) -> list[tuple[int, int]]:
    """Dead letters into webhook.dlq, keyed by endpoint as the services write them; their
    (partition, offset)."""
    dlq = Topics(settings.topic_prefix).dlq
    positions = []
    for dead in letters:
        meta = await producer.send_and_wait(
            dlq, key=dead.envelope.endpoint_id.encode(), value=encode(dead)
        )
        positions.append((meta.partition, meta.offset))
    return positions


def job(endpoint_id: str, partition: int, position: int, **fields: object) -> ReplayJob:
    values: dict[str, object] = {
        "id": f"rpl_{endpoint_id}",
        "endpoint_id": endpoint_id,
        "account_id": "acc_1",
        "since_ms": 0,
        "until_ms": NOW_MS,
        "dlq_partition": partition,
        "end_offset": position,
        "position": position,
        "state": "completed",
        "started_at_ms": NOW_MS,
        "updated_at_ms": NOW_MS,
        **fields,
    }
    return msgspec.convert(values, ReplayJob)


async def put_job(settings: Settings, producer: AIOKafkaProducer, replay: ReplayJob) -> None:
    replays = Topics(settings.topic_prefix).replays
    await producer.send_and_wait(replays, key=replay.id.encode(), value=encode(replay))


@pytest.fixture(name="three_letters_two_replayed")
async def fixture_three_letters_two_replayed(
    cli_settings: Settings, producer: AIOKafkaProducer
) -> list[tuple[int, int]]:
    """ep_a: three letters, the first two covered by a replay job; ep_b: one open letter."""
    positions = await put_letters(
        cli_settings,
        producer,
        [
            letter("ep_a", 1),
            letter("ep_a", 2),
            letter("ep_a", 3, reason="endpoint_gone"),
            letter("ep_b", 1, account_id="acc_2", dead_at_ms=NOW_MS - 3 * 86_400_000),
        ],
    )
    partition, third = positions[2]
    await put_job(cli_settings, producer, job("ep_a", partition, third))
    return positions


# --- dlq ---------------------------------------------------------------------------------------


async def test_dlq_list_tells_replayed_letters_from_open_ones(
    clickhook: Clickhook, three_letters_two_replayed: list[tuple[int, int]]
) -> None:
    run = await clickhook("dlq", "list", "--json")

    assert run.code == 0, run.err
    states = {line["webhook_id"]: (line["state"], line["replayed_by"]) for line in run.json_lines()}
    assert states == {
        "msg_ep_a_1": ("replayed", "rpl_ep_a"),
        "msg_ep_a_2": ("replayed", "rpl_ep_a"),
        "msg_ep_a_3": ("open", None),
        "msg_ep_b_1": ("open", None),
    }


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (["--endpoint", "ep_a"], {"msg_ep_a_1", "msg_ep_a_2", "msg_ep_a_3"}),
        (["--account", "acc_2"], {"msg_ep_b_1"}),
        (["--reason", "endpoint_gone"], {"msg_ep_a_3"}),
        (["--state", "open"], {"msg_ep_a_3", "msg_ep_b_1"}),
        (["--since", "2d"], {"msg_ep_a_1", "msg_ep_a_2", "msg_ep_a_3"}),
        (["--until", "2d"], {"msg_ep_b_1"}),
        (["--since", "yesterday", "--state", "replayed"], {"msg_ep_a_1", "msg_ep_a_2"}),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else "",
)
async def test_dlq_list_filters(
    clickhook: Clickhook,
    three_letters_two_replayed: list[tuple[int, int]],
    filters: list[str],
    expected: set[str],
) -> None:
    run = await clickhook("dlq", "list", "--json", *filters)

    assert run.code == 0, run.err
    assert {line["webhook_id"] for line in run.json_lines()} == expected


async def test_dlq_list_prints_a_table_by_default(
    clickhook: Clickhook, three_letters_two_replayed: list[tuple[int, int]]
) -> None:
    run = await clickhook("dlq", "list", "--endpoint", "ep_b")

    header, row = run.out.splitlines()
    assert header.split() == [
        "POSITION",
        "DEAD_AT",
        "ENDPOINT_ID",
        "ACCOUNT_ID",
        "REASON",
        "ATTEMPTS",
        "STATE",
    ]
    assert row.split()[2:] == ["ep_b", "acc_2", "exhausted", "4", "open"]


async def test_dlq_count_counts_open_and_replayed_per_endpoint_and_reason(
    clickhook: Clickhook, three_letters_two_replayed: list[tuple[int, int]]
) -> None:
    run = await clickhook("dlq", "count")

    assert run.code == 0, run.err
    rows = [line.split() for line in run.out.splitlines()[1:]]
    assert rows == [
        ["ep_a", "acc_1", "endpoint_gone", "1", "0"],
        ["ep_a", "acc_1", "exhausted", "0", "2"],
        ["ep_b", "acc_2", "exhausted", "1", "0"],
        ["total", "2", "2"],
    ]


async def test_dlq_show_by_position_prints_the_whole_letter(
    clickhook: Clickhook, three_letters_two_replayed: list[tuple[int, int]]
) -> None:
    partition, offset = three_letters_two_replayed[2]

    run = await clickhook("dlq", "show", f"{partition}:{offset}", "--json")

    assert run.code == 0, run.err
    shown = orjson.loads(run.out)
    assert shown["webhook_id"] == "msg_ep_a_3"
    assert shown["state"] == "open"
    assert shown["letter"]["envelope"]["event"] == {"id": "evt_3", "type": "link.clicked"}


async def test_dlq_show_by_webhook_id(
    clickhook: Clickhook, three_letters_two_replayed: list[tuple[int, int]]
) -> None:
    run = await clickhook("dlq", "show", "msg_ep_a_1", "--json")

    assert run.code == 0, run.err
    assert orjson.loads(run.out)["replayed_by"] == "rpl_ep_a"


async def test_dlq_show_reads_as_text_with_utc_times_and_an_attempts_table(
    clickhook: Clickhook, three_letters_two_replayed: list[tuple[int, int]]
) -> None:
    partition, offset = three_letters_two_replayed[2]

    run = await clickhook("dlq", "show", f"{partition}:{offset}")

    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert lines[0] == f"dead letter {partition}:{offset} (open)"
    assert re.search(r"^  died        \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC: ", run.out, re.M)
    assert lines[lines.index("") + 1].split()[:3] == ["#", "AT", "(UTC)"]


async def test_dlq_show_of_an_unknown_id_fails_with_one_line(
    clickhook: Clickhook, producer: AIOKafkaProducer
) -> None:
    run = await clickhook("dlq", "show", "9:999")

    assert_failed_with_one_line(run, "clickhook: no dead letter 9:999")


# --- failures and the entry point ------------------------------------------------------------


async def test_an_unreachable_broker_fails_with_one_line(prefix: str) -> None:
    env = service_env("127.0.0.1:9", prefix)  # discard port: nothing listens there

    run = await run_clickhook(env, "dlq", "count")

    assert_failed_with_one_line(run, "clickhook: cannot reach the broker at 127.0.0.1:9")


def test_the_console_script_runs_the_cli() -> None:
    """``[project.scripts]``: installing the project puts ``clickhook`` next to python."""
    script = Path(sys.executable).with_name("clickhook")

    assert script.exists(), "run `make install` (uv sync) to install the entry point"
    assert "shared.cli.main" in script.read_text()


# --- replay --------------------------------------------------------------------------------------


@pytest.fixture(name="store")
async def fixture_store(
    cli_settings: Settings, producer: AIOKafkaProducer
) -> AsyncIterator[EndpointStore]:
    store = EndpointStore(cli_settings)
    await store.start()
    follower = asyncio.create_task(store.follow())
    await store.loaded.wait()
    yield store
    follower.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await follower
    await store.stop()


@pytest.fixture(name="ep_r")
async def fixture_ep_r(store: EndpointStore) -> str:
    """An enabled endpoint of the registry, whose dead letters a test puts in the DLQ."""
    await store.create(endpoint_to("https://hooks.example.com/a", endpoint_id="ep_r"))
    return "ep_r"


async def test_replay_puts_the_open_letters_back_and_records_the_job(
    clickhook: Clickhook, cli_settings: Settings, producer: AIOKafkaProducer, ep_r: str
) -> None:
    await put_letters(cli_settings, producer, [letter(ep_r, n) for n in range(1, 6)])

    run = await clickhook("replay", "--endpoint", "ep_r", "--since", "1d")

    assert run.code == 0, run.err
    assert "completed; 5 dead letters in the window, 5 replayed, 0 already replayed" in run.out
    topics = Topics(cli_settings.topic_prefix)
    tier = topics.retry(cli_settings.retry_schedule_s[0])
    queued = await read_records(cli_settings.kafka_bootstrap, tier, 5, timeout_s=15)
    assert sorted(decode_envelope(r.value).webhook_id for r in queued) == [
        f"msg_ep_r_{n}" for n in range(1, 6)
    ]
    listed = await clickhook("dlq", "list", "--json", "--endpoint", "ep_r")
    assert {line["state"] for line in listed.json_lines()} == {"replayed"}


async def test_replay_twice_replays_nothing_the_second_time(
    clickhook: Clickhook, cli_settings: Settings, producer: AIOKafkaProducer, ep_r: str
) -> None:
    await put_letters(cli_settings, producer, [letter(ep_r, 1)])
    await clickhook("replay", "--endpoint", "ep_r", "--since", "1d")

    again = await clickhook("replay", "--endpoint", "ep_r", "--since", "1d")

    assert again.code == 0, again.err
    assert "1 dead letters in the window, 0 replayed, 1 already replayed" in again.out


async def test_replay_of_an_unknown_endpoint_fails_with_one_line(
    clickhook: Clickhook, store: EndpointStore
) -> None:
    run = await clickhook("replay", "--endpoint", "ep_nowhere", "--since", "7d")

    assert_failed_with_one_line(run, "clickhook: no endpoint ep_nowhere (clickhook endpoints list")


async def test_replay_of_a_disabled_endpoint_says_to_enable_it(
    clickhook: Clickhook, store: EndpointStore
) -> None:
    disabled = msgspec.structs.replace(
        endpoint_to("https://hooks.example.com/a", endpoint_id="ep_off"), enabled=False
    )
    await store.create(disabled)

    run = await clickhook("replay", "--endpoint", "ep_off", "--since", "7d")

    assert run.code == 1
    assert "clickhook endpoints enable ep_off" in run.err


async def test_replay_while_another_replay_of_the_endpoint_runs_is_refused(
    clickhook: Clickhook, cli_settings: Settings, producer: AIOKafkaProducer, ep_r: str
) -> None:
    await put_letters(cli_settings, producer, [letter(ep_r, 1)])
    # A job of an ingest instance, heartbeating: the CLI's claim must see it.
    now_ms = int(time.time() * 1000)
    running = job(ep_r, 0, 0, id="rpl_api", state="running", owner="ingest-1/7")
    running = msgspec.structs.replace(running, started_at_ms=now_ms, updated_at_ms=now_ms)
    await put_job(cli_settings, producer, running)

    run = await clickhook("replay", "--endpoint", "ep_r", "--since", "1d")

    assert_failed_with_one_line(run, "clickhook: replay rpl_api of ep_r is still running")
    assert "ingest-1/7" in run.err


# --- endpoints -----------------------------------------------------------------------------------


async def test_endpoints_disable_then_enable_through_the_store(
    clickhook: Clickhook, cli_settings: Settings, store: EndpointStore
) -> None:
    await store.create(endpoint_to("https://hooks.example.com/a", endpoint_id="ep_x"))

    disabled = await clickhook("endpoints", "disable", "ep_x", "--reason", "abuse report 42")
    shown = await clickhook("endpoints", "show", "ep_x")
    enabled = await clickhook("endpoints", "enable", "ep_x")

    assert (disabled.code, disabled.out) == (0, "ep_x disabled\n")
    assert orjson.loads(shown.out)["disabled_reason"] == "abuse report 42"
    assert orjson.loads(shown.out)["enabled"] is False
    assert (enabled.code, enabled.out) == (0, "ep_x enabled\n")
    await asyncio.sleep(0)
    for _ in range(50):  # the store follows the topic: the CLI's write arrives here too
        current = store.table.get("ep_x")
        if current is not None and current.enabled and current.disabled_reason is None:
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail(f"the enable never reached the endpoint table: {store.table.get('ep_x')}")


async def test_endpoints_list_and_show_never_print_secrets(
    clickhook: Clickhook, store: EndpointStore
) -> None:
    endpoint = endpoint_to("https://hooks.example.com/a", endpoint_id="ep_s", account_id="acc_9")
    await store.create(endpoint)

    listed = await clickhook("endpoints", "list", "--account", "acc_9", "--json")
    shown = await clickhook("endpoints", "show", "ep_s")

    assert [line["id"] for line in listed.json_lines()] == ["ep_s"]
    secret = endpoint.secrets[0].secret
    assert secret not in listed.out
    assert secret not in shown.out


async def test_endpoints_show_of_an_unknown_id_fails_with_one_line(
    clickhook: Clickhook, store: EndpointStore
) -> None:
    run = await clickhook("endpoints", "show", "ep_missing")

    assert_failed_with_one_line(run, "clickhook: no endpoint ep_missing (clickhook endpoints list")


# --- topics --------------------------------------------------------------------------------------


async def test_topics_create_creates_every_topic_once(
    clickhook: Clickhook, cli_settings: Settings
) -> None:
    first = await clickhook("topics", "create")
    second = await clickhook("topics", "create")

    names = [spec.name for spec in topic_specs(cli_settings)]
    assert first.code == 0, first.err
    assert [line.split()[:2] for line in first.out.splitlines()] == [
        ["created", name] for name in names
    ]
    assert {line.split()[0] for line in second.out.splitlines()} == {"exists"}


async def test_topics_tail_decodes_dead_letters(
    clickhook: Clickhook, cli_settings: Settings, producer: AIOKafkaProducer
) -> None:
    await put_letters(cli_settings, producer, [letter("ep_t", 1)])

    run = await clickhook("topics", "tail", "webhook.dlq")

    assert run.code == 0, run.err
    [line] = run.json_lines()
    assert line["key"] == "ep_t"
    assert line["topic"] == Topics(cli_settings.topic_prefix).dlq
    value = line["value"]
    assert isinstance(value, dict)
    assert value["reason"] == "exhausted"


async def test_topics_tail_shows_an_undecodable_value_as_base64_with_the_error(
    clickhook: Clickhook, cli_settings: Settings, producer: AIOKafkaProducer
) -> None:
    dlq = Topics(cli_settings.topic_prefix).dlq
    await producer.send_and_wait(dlq, key=b"ep_t", value=b"\xff not json")

    [line] = (await clickhook("topics", "tail", "webhook.dlq")).json_lines()

    assert line["value_base64"] == "/yBub3QganNvbg=="
    assert "decode_error" in line


async def test_topics_tail_shows_the_last_records_or_all_of_them(
    clickhook: Clickhook, cli_settings: Settings, producer: AIOKafkaProducer
) -> None:
    clicks = Topics(cli_settings.topic_prefix).clicks
    for n in range(12):
        await producer.send_and_wait(clicks, key=b"lnk_1", value=orjson.dumps({"n": n}))

    last = await clickhook("topics", "tail", "clicks", "-n", "3")
    every = await clickhook("topics", "tail", "clicks", "--from-beginning")

    assert [line["value"] for line in last.json_lines()] == [{"n": 9}, {"n": 10}, {"n": 11}]
    assert len(every.json_lines()) == 12


async def test_topics_tail_of_an_unknown_topic_is_one_line_at_once_with_exit_2(
    clickhook: Clickhook,
) -> None:
    started = time.monotonic()

    run = await clickhook("topics", "tail", "no.such.topic")

    assert run.code == 2
    assert run.out == ""
    assert run.err.startswith("clickhook: no topic ")
    assert run.err.count("\n") == 1, run.err
    assert time.monotonic() - started < 20  # not the minute a topic being created gets


async def test_topics_tail_of_a_topic_not_clickhooks_shows_base64(
    clickhook: Clickhook, cli_settings: Settings, producer: AIOKafkaProducer
) -> None:
    foreign = cli_settings.topic_prefix + "other.things"
    await ensure_topics(cli_settings, [NewTopic(foreign, 1, 1)])
    await producer.send_and_wait(foreign, value=b"raw")

    [line] = (await clickhook("topics", "tail", "other.things")).json_lines()

    assert line["value_base64"] == "cmF3"


async def test_topics_tail_follow_prints_records_written_after_it_started(
    cli_settings: Settings, producer: AIOKafkaProducer, kafka_bootstrap: str, prefix: str
) -> None:
    env = service_env(kafka_bootstrap, prefix)
    process = await start_clickhook(env, "topics", "tail", "clicks", "--follow")
    assert process.stdout is not None
    try:
        clicks = Topics(cli_settings.topic_prefix).clicks
        line = b""
        deadline = time.monotonic() + 30
        while not line and time.monotonic() < deadline:
            await producer.send_and_wait(clicks, key=b"lnk_f", value=b'{"late": true}')
            try:
                line = await asyncio.wait_for(process.stdout.readline(), timeout=1)
            except TimeoutError:
                continue
    finally:
        process.terminate()
        await process.wait()

    assert orjson.loads(line)["value"] == {"late": True}
