"""Brokers of a test's own, via the project's deploy/local/kafka.sh: one node for tests that
stop it, or a cluster of three KRaft nodes whose nodes a test kills and starts again."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from tests.support.services import ROOT, free_port

KAFKA_SH = ROOT / "deploy" / "local" / "kafka.sh"
CLUSTER_NODES = 3


def kafka_sh(env: dict[str, str], *command: str) -> str:
    """Run ``kafka.sh COMMAND...`` and return its stdout (the bootstrap address, for start)."""
    done = subprocess.run(
        ["bash", str(KAFKA_SH), *command],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"kafka.sh {' '.join(command)} failed: {done.stderr[-3000:]}")
    return done.stdout


@contextlib.asynccontextmanager
async def admin_client(bootstrap: str) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


async def wait_group_stable(
    bootstrap: str, group: str, members: int, timeout_s: float = 60.0
) -> None:
    """Until the consumer group has ``members`` members and is done rebalancing (every
    member has its assignment), as the group coordinator tells."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            async with admin_client(bootstrap) as admin:
                described = await admin.describe_consumer_groups([group])
        except KafkaError as exc:  # no coordinator yet: the offsets topic is being created
            if not exc.retriable:
                raise
            described = []
        # DescribeGroups: (error, group id, state, protocol type, protocol, members, ...)
        states = [(g[2], len(g[5])) for response in described for g in response.groups]
        if states == [("Stable", members)]:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"group {group} not stable with {members}: {states}")
        await asyncio.sleep(0.5)


@dataclass
class PrivateBroker:
    """Keeps its data directory and ports across stop/start, like a restarted server."""

    state_dir: Path
    port: int
    controller_port: int

    @classmethod
    def in_dir(cls, directory: Path) -> PrivateBroker:
        return cls(directory / "kafka", free_port(), free_port())

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _env(self) -> dict[str, str]:
        return {
            "KAFKA_PORT": str(self.port),
            "KAFKA_CONTROLLER_PORT": str(self.controller_port),
            "KAFKA_STATE_DIR": str(self.state_dir),
            "KAFKA_DATA_DIR": str(self.state_dir / "data"),
        }

    async def start(self) -> None:
        await asyncio.to_thread(kafka_sh, self._env(), "start")

    async def stop(self) -> None:
        await asyncio.to_thread(kafka_sh, self._env(), "stop")


@dataclass(frozen=True, slots=True)
class PartitionState:
    leader: int  # a node id; -1 while none leads
    replicas: set[int]
    isr: set[int]  # the replicas in sync


@dataclass
class PrivateCluster:
    """Three nodes (broker and controller each) on free loopback ports. Node ``n`` (1-3) is
    also its broker id, as partition leaders report it. A killed node keeps its data and ports
    and rejoins when started again."""

    state_dir: Path
    bootstrap: str = ""
    profile: str = "test"  # kafka.sh's KAFKA_PROFILE

    def _env(self) -> dict[str, str]:
        return {
            "KAFKA_NODES": str(CLUSTER_NODES),
            "KAFKA_PORT": "0",
            "KAFKA_STATE_DIR": str(self.state_dir),
            "KAFKA_LOG_LEVEL": "WARN",
            "KAFKA_PROFILE": self.profile,
        }

    def node_pids(self) -> list[int]:
        """The running nodes' JVMs, node 1 first."""
        return [int(path.read_text()) for path in sorted(self.state_dir.glob("node-*/kafka.pid"))]

    def start(self) -> str:
        """Start the cluster, or the nodes of it that are down; the bootstrap list."""
        self.bootstrap = kafka_sh(self._env(), "start").strip().splitlines()[-1]
        return self.bootstrap

    def stop(self) -> None:
        kafka_sh(self._env(), "stop")

    async def kill_node(self, node: int) -> None:
        """SIGKILL: no controlled shutdown, no leadership handed over."""
        await asyncio.to_thread(kafka_sh, self._env(), "kill-node", str(node))

    async def start_node(self, node: int) -> None:
        """Start a node again on its data; returns once it answers metadata requests."""
        await asyncio.to_thread(kafka_sh, self._env(), "start-node", str(node))

    async def leaders(self, topic: str) -> dict[int, int]:
        """Partition → the node leading it (-1 while none does)."""
        return {p: state.leader for p, state in (await self.partitions(topic)).items()}

    async def partitions(self, topic: str) -> dict[int, PartitionState]:
        """The cluster's view of each partition of ``topic``."""
        async with admin_client(self.bootstrap) as admin:
            described = await admin.describe_topics([topic])
        return {
            p["partition"]: PartitionState(p["leader"], set(p["replicas"]), set(p["isr"]))
            for d in described
            if d["topic"] == topic
            for p in d["partitions"]
        }

    async def topic_config(self, topic: str, key: str) -> str | None:
        """One config value of ``topic`` as the brokers apply it (their defaults included)."""
        async with admin_client(self.bootstrap) as admin:
            responses = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, topic)]
            )
        return next(
            (
                entry[1]
                for response in responses
                for resource in response.resources
                for entry in resource[4]
                if entry[0] == key
            ),
            None,
        )

    async def wait_in_sync(self, topics: Iterable[str], timeout_s: float = 60.0) -> None:
        """Until every partition of ``topics`` has all its replicas in sync (a node that was
        down has caught up), so that the next fault leaves a quorum of replicas."""
        deadline = time.monotonic() + timeout_s
        pending = list(topics)
        while pending:
            states = await self.partitions(pending[0])
            if states and all(state.isr == state.replicas for state in states.values()):
                pending.pop(0)
                continue
            if time.monotonic() > deadline:
                raise AssertionError(f"{pending[0]} not in sync after {timeout_s}s: {states}")
            await asyncio.sleep(0.5)
