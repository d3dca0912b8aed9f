"""The Dockerfile, read as Docker would parse it (no engine runs here, so the image itself is not built in CI)."""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.chart.conftest import CHART_DIR
from tests.chart.helm_tool import REPO_ROOT

DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def args(self) -> dict[str, str]:
        return dict(_arg_default(a) for a in self.all("ARG"))


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]


def _arg_default(args: str) -> tuple[str, str]:
    name, _, default = args.partition("=")
    return name.strip(), default.strip().strip('"')


def _logical_lines(text: str) -> list[str]:
    """Join continuation lines and drop comments, as Docker's parser does."""
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#"):  # comments, also those inside a continued instruction, are skipped
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1].rstrip() + " "
            continue
        current += stripped
        if current.strip():
            lines.append(current.strip())
        current = ""
    assert not current, "the Dockerfile ends in a line continuation"
    return lines


def parse_dockerfile(text: str) -> Dockerfile:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in _logical_lines(text):
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        args = args.strip()
        if keyword == "FROM":
            parts = args.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: global_args[m.group(1)], parts[0])
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        elif not stages:
            assert keyword == "ARG", f"only ARG may come before the first FROM, found {keyword}"
            global_args.update([_arg_default(args)])
        else:
            stages[-1].instructions.append((keyword, args))
    return Dockerfile(global_args, stages)


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return parse_dockerfile(DOCKERFILE.read_text())


def _ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps `path` out of the build context (enough of its rules for our patterns)."""
    ignored = False
    parts = path.split("/")
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.removeprefix("!").rstrip("/")
        for depth in range(1, len(parts) + 1):
            prefix = "/".join(parts[:depth])
            if fnmatch.fnmatch(prefix, pattern) or fnmatch.fnmatch(prefix, pattern.removeprefix("**/")):
                ignored = not negate
                break
    return ignored


def _dockerignore() -> list[str]:
    lines = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def test_parser_reads_continuations_and_stages() -> None:
    parsed = parse_dockerfile("ARG BASE=python:3.11-slim\nFROM ${BASE} AS a\nRUN one \\\n  # note\n  two\nFROM a\n")

    assert [(s.base, s.name) for s in parsed.stages] == [("python:3.11-slim", "a"), ("a", None)]
    assert parsed.stages[0].instructions == [("RUN", "one two")]


def test_multi_stage_build_on_slim_python_3_11(dockerfile: Dockerfile) -> None:
    assert [s.name for s in dockerfile.stages] == ["builder", "runtime"]
    assert {s.base for s in dockerfile.stages} == {"python:3.11-slim"}
    runtime = dockerfile.stages[-1]
    assert {"--from=builder /opt/venv /opt/venv", "--from=builder /app /app"} <= set(runtime.all("COPY"))
    assert not any("pip install" in run for run in runtime.all("RUN")), "the runtime stage installs nothing"


def test_runtime_runs_as_the_non_root_user_the_chart_expects(dockerfile: Dockerfile) -> None:
    runtime = dockerfile.stages[-1]
    users = runtime.all("USER")
    chart_values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())

    assert users, "the runtime stage must set USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0, "a numeric uid lets Kubernetes verify runAsNonRoot"
    assert int(uid) == chart_values["podSecurityContext"]["runAsUser"]
    assert int(gid) == chart_values["podSecurityContext"]["runAsGroup"]
    assert runtime.instructions.index(("USER", users[-1])) > max(
        i for i, (kw, _) in enumerate(runtime.instructions) if kw in ("RUN", "COPY")
    ), "nothing may be installed after switching to the app user"


def test_cpu_torch_is_pinned_and_installed_first(dockerfile: Dockerfile) -> None:
    builder = dockerfile.stages[0]
    args = builder.args()
    runs = builder.all("RUN")
    torch_run = next(i for i, run in enumerate(runs) if "torch==" in run)
    project_run = next(i for i, run in enumerate(runs) if '--editable ".[inference]"' in run)
    inference = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]

    assert args["TORCH_VERSION"] == "2.13.0"
    assert f"torch=={args['TORCH_VERSION']}" in inference["inference"]
    assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert '"torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"' in runs[torch_run]
    assert torch_run < project_run


def test_entrypoint_is_the_console_script_serving_the_gateway(dockerfile: Dockerfile) -> None:
    runtime = dockerfile.stages[-1]
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    chart_port = yaml.safe_load((CHART_DIR / "values.yaml").read_text())["gateway"]["port"]

    assert json.loads(runtime.all("ENTRYPOINT")[-1]) == ["model-engine"]
    assert "model-engine" in scripts
    command = json.loads(runtime.all("CMD")[-1])
    assert command[0] == "gateway" and command[command.index("--port") + 1] == str(chart_port)
    assert runtime.all("EXPOSE") == [str(chart_port)]


def test_migrations_ship_beside_the_package(dockerfile: Dockerfile) -> None:
    """model_engine_server/db/migrate.py looks for migrations/ next to the package directory."""
    from model_engine_server.db import migrate

    builder = dockerfile.stages[0]
    copies = {args.split()[0]: args.split()[-1] for args in builder.all("COPY") if not args.startswith("--from")}

    assert Path(migrate.MIGRATIONS_DIR) == Path(migrate.__file__).resolve().parents[2] / "migrations"
    assert copies["migrations"] == "./migrations" and copies["model_engine_server"] == "./model_engine_server"
    assert builder.all("WORKDIR") == ["/app"]
    assert any('--editable ".[inference]"' in run for run in builder.all("RUN"))


def test_build_context_has_what_the_image_copies(dockerfile: Dockerfile) -> None:
    patterns = _dockerignore()
    sources = [
        source
        for stage in dockerfile.stages
        for args in stage.all("COPY")
        if not args.startswith("--from")
        for source in args.split()[:-1]
    ]

    assert sources, "no COPY from the build context"
    for source in sources:
        assert (REPO_ROOT / source).exists(), f"COPY {source}: not in the repository"
        assert not _ignored(source, patterns), f"COPY {source}: excluded by .dockerignore"


@pytest.mark.parametrize("path", [".venv", ".git", ".tools", "tests", "charts", "model_engine_server/__pycache__"])
def test_build_context_leaves_out_local_state(path: str) -> None:
    assert _ignored(path, _dockerignore())
