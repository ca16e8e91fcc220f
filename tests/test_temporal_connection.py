"""The connection to a Temporal cluster: TLS, mTLS and an API key, from the environment.

The settings are checked at start (a cert without its key, a missing or unreadable
file: refused, naming the variable, never quoting a file). The handshakes are real:
the CLI dev server has no TLS of its own, so a small TLS-terminating proxy
(Python's ``ssl``, with the certificates the deployment's deploy/tls/make_certs.py makes)
stands in front of it, the way the compose stack's frontend with docker-compose.mtls.yml,
a load balancer or Temporal Cloud's front end does. A worker connected through it over mTLS
runs a complaint to its acknowledgement letter.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import stat
from dataclasses import dataclass, replace
from pathlib import Path
from typing import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.service import TLSConfig
from temporalio.testing import WorkflowEnvironment

from complaints.models import LetterKind
from devstack.smtp import MailCatcher
from infra.config import ConfigError, Settings, load_settings
from infra.temporal_client import connect, tls_config
from tests.cli import REPO, deployment_script, run_cli
from tests.conftest import ENCRYPTION_KEYS
from tests.lifecycle import start_formal, wait_letter
from worker import build_worker

SERVER_NAME = "temporal.internal"  # the only name in the server certificate
API_KEY = "tmprl-api-key-for-tests-0123456789"
CONNECT_TIMEOUT = 30.0

# ------------------------------------------------------------------ certificates


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed nothing here


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """The certificates the deployment makes (deploy/tls/make_certs.py), for the name SERVER_NAME; and
    another CA's, which signed nothing the front end trusts."""
    d = tmp_path_factory.mktemp("pki")
    make_certs = deployment_script("deploy/tls/make_certs.py").make_certs
    make_certs(d / "stack", [SERVER_NAME])
    make_certs(d / "other", [])
    stack = d / "stack"
    return Pki(ca=stack / "ca.pem", server_cert=stack / "server.pem", server_key=stack / "server.key",
               client_cert=stack / "worker.pem", client_key=stack / "worker.key", other_ca=d / "other" / "ca.pem")


async def test_the_deployments_script_makes_a_ca_a_server_and_four_clients_and_never_overwrites(
        tmp_path: Path) -> None:
    out = tmp_path / "certs"
    made = await run_cli(str(REPO / "deploy" / "tls" / "make_certs.py"), "--out", str(out), "--host",
                         "temporal.example.org", env={}, timeout=60)
    assert made.code == 0, made
    names = {"ca", "server", "worker", "intake", "staff", "ui"}
    assert {p.name for p in out.iterdir()} == {f"{n}.{ext}" for n in names for ext in ("pem", "key")}
    assert stat.S_IMODE(out.stat().st_mode) == 0o700 and stat.S_IMODE((out / "ca.key").stat().st_mode) == 0o600
    assert all(stat.S_IMODE((out / f"{n}.key").stat().st_mode) == 0o644 for n in names - {"ca"})  # containers
    ca = x509.load_pem_x509_certificate((out / "ca.pem").read_bytes())
    server = x509.load_pem_x509_certificate((out / "server.pem").read_bytes())
    server.verify_directly_issued_by(ca)
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {"temporal", "localhost", "temporal.example.org"}
    assert ExtendedKeyUsageOID.SERVER_AUTH in server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    for client in names - {"ca", "server"}:
        cert = x509.load_pem_x509_certificate((out / f"{client}.pem").read_bytes())
        cert.verify_directly_issued_by(ca)
        assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == \
            [ExtendedKeyUsageOID.CLIENT_AUTH], client
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    again = await run_cli(str(REPO / "deploy" / "tls" / "make_certs.py"), "--out", str(out), env={}, timeout=60)
    assert again.code == 0 and "every certificate exists already" in again.out
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


# ------------------------------------------------------------------ the TLS front end


@dataclass
class TlsProxy:
    address: str
    handshakes_failed: int = 0
    connections: int = 0


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError, asyncio.CancelledError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


@contextlib.asynccontextmanager
async def tls_proxy(upstream: str, pki: Pki, require_client_cert: bool) -> AsyncIterator[TlsProxy]:
    """TLS (HTTP/2 by ALPN) on a loopback port, forwarded in plain to the dev server."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    context.set_alpn_protocols(["h2"])
    if require_client_cert:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(pki.ca)
    host, port = upstream.rsplit(":", 1)
    tasks: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        proxy.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            writer.close()
            return
        for task in (asyncio.create_task(_pipe(reader, up_writer)), asyncio.create_task(_pipe(up_reader, writer))):
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    def on_error(loop: asyncio.AbstractEventLoop, ctx: dict[str, object]) -> None:
        proxy.handshakes_failed += 1  # a refused handshake is what some tests expect

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(on_error)
    proxy = TlsProxy(address=f"127.0.0.1:{server.sockets[0].getsockname()[1]}")
    try:
        yield proxy
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        loop.set_exception_handler(previous)


def _env(**values: str) -> dict[str, str]:
    return {"COMPLAINTS_ENCRYPTION_KEYS": ENCRYPTION_KEYS, **values}


def _mtls_env(pki: Pki, address: str, **extra: str) -> dict[str, str]:
    return _env(**{"TEMPORAL_ADDRESS": address, "TEMPORAL_TLS_CERT": str(pki.client_cert),
                   "TEMPORAL_TLS_KEY": str(pki.client_key), "TEMPORAL_TLS_CA": str(pki.ca),
                   "TEMPORAL_TLS_SERVER_NAME": SERVER_NAME, **extra})


async def _cannot_connect(settings: Settings) -> str:
    with pytest.raises(RuntimeError) as info:
        await asyncio.wait_for(connect(settings), CONNECT_TIMEOUT)
    return str(info.value)


# ------------------------------------------------------------------ settings


def test_without_tls_settings_the_connection_is_plain() -> None:
    settings = load_settings(_env())
    assert settings.temporal_tls is False
    assert tls_config(settings) is False
    assert settings.temporal_api_key is None


def test_mtls_settings_name_the_files_and_build_the_sdk_tls_config(pki: Pki) -> None:
    settings = load_settings(_mtls_env(pki, "temporal.example:7233"))
    assert settings.temporal_tls is True
    assert (settings.temporal_tls_cert, settings.temporal_tls_key, settings.temporal_tls_ca) == (
        pki.client_cert, pki.client_key, pki.ca)
    tls = tls_config(settings)
    assert isinstance(tls, TLSConfig)
    assert tls.client_cert == pki.client_cert.read_bytes()
    assert tls.client_private_key == pki.client_key.read_bytes()
    assert tls.server_root_ca_cert == pki.ca.read_bytes()
    assert tls.domain == SERVER_NAME


@pytest.mark.parametrize("given, missing", [("TEMPORAL_TLS_CERT", "TEMPORAL_TLS_KEY"),
                                            ("TEMPORAL_TLS_KEY", "TEMPORAL_TLS_CERT")])
def test_a_client_certificate_without_its_key_or_the_reverse_is_refused(pki: Pki, given: str, missing: str) -> None:
    path = pki.client_cert if given == "TEMPORAL_TLS_CERT" else pki.client_key
    with pytest.raises(ConfigError) as info:
        load_settings(_env(**{given: str(path)}))
    assert str(info.value).startswith(f"{missing}:"), info.value


@pytest.mark.parametrize("variable", ["TEMPORAL_TLS_CERT", "TEMPORAL_TLS_KEY", "TEMPORAL_TLS_CA"])
def test_a_tls_file_that_does_not_exist_is_refused_naming_the_variable(pki: Pki, tmp_path: Path, variable: str) -> None:
    env = _mtls_env(pki, "temporal.example:7233")
    env[variable] = str(tmp_path / "nowhere.pem")
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    assert str(info.value) == f"{variable}: {tmp_path / 'nowhere.pem'} does not exist"


def test_a_tls_file_that_cannot_be_read_as_pem_is_refused_without_quoting_it(pki: Pki, tmp_path: Path) -> None:
    secret = tmp_path / "not-a-key.pem"
    secret.write_text("password=hunter2-do-not-print\n")
    env = _mtls_env(pki, "temporal.example:7233", TEMPORAL_TLS_KEY=str(secret))
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    assert str(info.value).startswith("TEMPORAL_TLS_KEY: ") and "not a PEM file" in str(info.value)
    assert "hunter2" not in str(info.value)

    env["TEMPORAL_TLS_KEY"] = str(tmp_path)  # a directory
    with pytest.raises(ConfigError, match="^TEMPORAL_TLS_KEY: .* is a directory"):
        load_settings(env)


def test_an_api_key_implies_tls_with_the_system_roots_and_stays_out_of_repr() -> None:
    settings = load_settings(_env(TEMPORAL_ADDRESS="eu-west-1.aws.api.temporal.io:7233",
                                  TEMPORAL_NAMESPACE="complaints.a1b2c", TEMPORAL_API_KEY=API_KEY))
    assert settings.temporal_tls is True and settings.temporal_api_key == API_KEY
    assert tls_config(settings) == TLSConfig()  # no CA file: the system's trust roots
    assert API_KEY not in repr(settings)


def test_tls_switched_on_or_off_explicitly(pki: Pki) -> None:
    assert load_settings(_env(TEMPORAL_TLS="on")).temporal_tls is True
    assert tls_config(load_settings(_env(TEMPORAL_TLS="on"))) == TLSConfig()
    # Off with an API key: a plain connection to, say, a local proxy that adds TLS itself.
    plain = load_settings(_env(TEMPORAL_TLS="off", TEMPORAL_API_KEY=API_KEY))
    assert plain.temporal_tls is False and plain.temporal_api_key == API_KEY
    with pytest.raises(ConfigError, match="^TEMPORAL_TLS: off, but TEMPORAL_TLS_CA is set"):
        load_settings(_env(TEMPORAL_TLS="off", TEMPORAL_TLS_CA=str(pki.ca)))
    with pytest.raises(ConfigError, match="^TEMPORAL_TLS: 'maybe' must be on or off"):
        load_settings(_env(TEMPORAL_TLS="maybe"))


# ------------------------------------------------------------------ real handshakes


@pytest_asyncio.fixture
async def mtls_front(env: WorkflowEnvironment, pki: Pki) -> AsyncIterator[TlsProxy]:
    async with tls_proxy(env.client.service_client.config.target_host, pki, require_client_cert=True) as proxy:
        yield proxy


async def test_a_worker_runs_a_complaint_over_mtls(env: WorkflowEnvironment, pki: Pki, mtls_front: TlsProxy,
                                                   settings: Settings, pool: asyncpg.Pool,
                                                   mail: MailCatcher) -> None:
    """Worker and starter connect through connect() with the TLS settings and nothing else changed."""
    tls = load_settings(_mtls_env(pki, mtls_front.address))
    settings = replace(settings, **{f: getattr(tls, f) for f in (
        "temporal_address", "temporal_tls", "temporal_tls_cert", "temporal_tls_key", "temporal_tls_ca",
        "temporal_tls_server_name")})
    client = await asyncio.wait_for(connect(settings), CONNECT_TIMEOUT)
    assert isinstance(client.service_client.config.tls, TLSConfig)
    assert client.service_client.config.target_host == mtls_front.address
    async with build_worker(client, settings, pool):
        handle = await start_formal(client, settings)
        await wait_letter(mail, handle, LetterKind.ACKNOWLEDGEMENT)
    assert mtls_front.connections >= 1


async def test_without_a_client_certificate_the_mtls_front_refuses(pki: Pki, mtls_front: TlsProxy) -> None:
    settings = load_settings(_env(TEMPORAL_ADDRESS=mtls_front.address, TEMPORAL_TLS_CA=str(pki.ca),
                                  TEMPORAL_TLS_SERVER_NAME=SERVER_NAME))
    await _cannot_connect(settings)


async def test_a_client_certificate_of_another_ca_is_refused(pki: Pki, mtls_front: TlsProxy) -> None:
    other = pki.other_ca.parent
    await _cannot_connect(load_settings(_mtls_env(pki, mtls_front.address, TEMPORAL_TLS_CERT=str(other / "worker.pem"),
                                                  TEMPORAL_TLS_KEY=str(other / "worker.key"))))


async def test_a_server_certificate_from_another_ca_or_for_another_name_is_refused(pki: Pki,
                                                                                    mtls_front: TlsProxy) -> None:
    other_ca = load_settings(_mtls_env(pki, mtls_front.address, TEMPORAL_TLS_CA=str(pki.other_ca)))
    assert "certificate" in (await _cannot_connect(other_ca)).lower()
    # Dialled by address, without TEMPORAL_TLS_SERVER_NAME: the certificate is for temporal.internal.
    env = _mtls_env(pki, mtls_front.address)
    del env["TEMPORAL_TLS_SERVER_NAME"]
    assert "certificate" in (await _cannot_connect(load_settings(env))).lower()


async def test_an_api_key_over_tls_connects_and_is_sent(env: WorkflowEnvironment, pki: Pki) -> None:
    async with tls_proxy(env.client.service_client.config.target_host, pki, require_client_cert=False) as front:
        settings = load_settings(_env(TEMPORAL_ADDRESS=front.address, TEMPORAL_API_KEY=API_KEY,
                                      TEMPORAL_TLS_CA=str(pki.ca), TEMPORAL_TLS_SERVER_NAME=SERVER_NAME))
        client = await asyncio.wait_for(connect(settings), CONNECT_TIMEOUT)
        assert client.service_client.config.api_key == API_KEY
        assert isinstance(client.service_client.config.tls, TLSConfig)
        info = await client.workflow_service.get_system_info(GetSystemInfoRequest())
        assert info.server_version


async def test_tls_against_the_plain_dev_server_fails_clearly(env: WorkflowEnvironment, pki: Pki) -> None:
    settings = load_settings(_env(TEMPORAL_ADDRESS=env.client.service_client.config.target_host,
                                  TEMPORAL_TLS_CA=str(pki.ca)))
    message = await _cannot_connect(settings)
    assert message.startswith("Failed client connect"), message
