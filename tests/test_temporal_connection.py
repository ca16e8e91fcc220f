"""The connection to a Temporal cluster: TLS, mTLS and an API key, from the environment.

The settings are checked at start (a cert without its key, a missing or unreadable
file: refused, naming the variable, never quoting a file). The handshakes are real:
the CLI dev server has no TLS of its own, so a small TLS-terminating proxy
(Python's ``ssl``, certificates made here with ``cryptography``) stands in front of
it, the way a load balancer or Temporal Cloud's front end does. A worker connected
through it over mTLS runs a complaint to its acknowledgement letter.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.service import TLSConfig
from temporalio.testing import WorkflowEnvironment

from complaints.models import LetterKind
from devstack.smtp import MailCatcher
from infra.config import ConfigError, Settings, load_settings
from infra.temporal_client import connect, tls_config
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


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key, now = _key(), datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(_name(common_name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def _leaf(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, common_name: str,
          usage: x509.ObjectIdentifier, names: list[x509.GeneralName] | None = None
          ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key, now = _key(), datetime.now(timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(ca.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                              critical=False))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def _write(path: Path, cert: x509.Certificate | None = None, key: ec.EllipticCurvePrivateKey | None = None) -> Path:
    if cert is not None:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    else:
        assert key is not None
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca, ca_key = _ca("Level Up test CA")
    server, server_key = _leaf(ca, ca_key, SERVER_NAME, ExtendedKeyUsageOID.SERVER_AUTH,
                               [x509.DNSName(SERVER_NAME)])
    client, client_key = _leaf(ca, ca_key, "complaints-worker", ExtendedKeyUsageOID.CLIENT_AUTH)
    other, _ = _ca("Someone else's CA")
    return Pki(ca=_write(d / "ca.pem", ca), server_cert=_write(d / "server.pem", server),
               server_key=_write(d / "server-key.pem", key=server_key),
               client_cert=_write(d / "client.pem", client),
               client_key=_write(d / "client-key.pem", key=client_key),
               other_ca=_write(d / "other-ca.pem", other))


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
