"""A broker of a test's own (for tests that stop it), via the project's deploy/local/kafka.sh."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

from tests.support.services import ROOT, free_port

KAFKA_SH = ROOT / "deploy" / "local" / "kafka.sh"


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
            **os.environ,
            "KAFKA_PORT": str(self.port),
            "KAFKA_CONTROLLER_PORT": str(self.controller_port),
            "KAFKA_STATE_DIR": str(self.state_dir),
            "KAFKA_DATA_DIR": str(self.state_dir / "data"),
        }

    async def _run(self, command: str) -> None:
        process = await asyncio.create_subprocess_exec(
            "bash",
            str(KAFKA_SH),
            command,
            env=self._env(),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"kafka.sh {command} failed: {stderr.decode(errors='replace')}")

    async def start(self) -> None:
        await self._run("start")

    async def stop(self) -> None:
        await self._run("stop")
