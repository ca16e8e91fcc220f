"""Create the certificates for mutual TLS to the Temporal frontend (docker-compose.mtls.yml).

    python deploy/tls/make_certs.py [--out deploy/tls/certs] [--host temporal.example.org ...] [--days 825]

Writes, into ``--out`` (created; an existing file is never overwritten, so running it again only adds
what is missing):

    ca.pem, ca.key                 the stack's own certificate authority (keep ca.key offline after use)
    server.pem, server.key         the Temporal frontend: DNS names temporal, localhost and every --host
    worker.pem, worker.key         the workers (TEMPORAL_TLS_CERT / TEMPORAL_TLS_KEY)
    intake.pem, intake.key         intake services (python -m starter, the API)
    staff.pem, staff.key           staff machines (admin.py)
    ui.pem, ui.key                 the Web UI

Each client certificate is for client authentication only; the server's is for server authentication
and, between the server's own services, client authentication; all are signed by ca.pem, which every
side trusts (TEMPORAL_TLS_CA). The key pairs are ECDSA P-256. The folder is 0700 (no other user of the
machine reaches it) and ca.key 0600 (never mounted anywhere); the other keys are 0644, because the
containers mount them as they are and run as users of their own, who must be able to read them. Run it with the repository's Python (the ``cryptography``
package the product already uses); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: The client certificates, by the name their files and common names carry.
CLIENTS = ("worker", "intake", "staff", "ui")
#: Names the frontend answers to inside the compose network and on the machine itself.
SERVER_NAMES = ("temporal", "localhost")
ORGANISATION = "Level Up complaints"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANISATION),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey, mode: int = 0o644) -> None:
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(descriptor, "wb") as out:
        out.write(data)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(descriptor, "wb") as out:
        out.write(cert.public_bytes(serialization.Encoding.PEM))


def _load(out: Path, name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate((out / f"{name}.pem").read_bytes())
    key = serialization.load_pem_private_key((out / f"{name}.key").read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return cert, key


def _issue(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate | None,
           issuer_key: ec.EllipticCurvePrivateKey, days: int, *, ca: bool = False,
           usage: list[x509.ObjectIdentifier] | None = None,
           alt_names: list[x509.GeneralName] | None = None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(_name(subject))
               .issuer_name(issuer.subject if issuer else _name(subject))
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=not ca, content_commitment=False,
                                            key_encipherment=False, data_encipherment=False, key_agreement=False,
                                            key_cert_sign=ca, crl_sign=ca, encipher_only=False,
                                            decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_certs(out: Path, hosts: list[str], days: int = 825) -> list[str]:
    """Create what is missing in ``out``; returns the names of the files written."""
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    out.chmod(0o700)
    written: list[str] = []
    if not (out / "ca.pem").exists():
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = _issue(f"{ORGANISATION} CA", ca_key, None, ca_key, days * 2, ca=True)
        _write_key(out / "ca.key", ca_key, mode=0o600)
        _write_cert(out / "ca.pem", ca)
        written += ["ca.pem", "ca.key"]
    ca, ca_key = _load(out, "ca")
    # Names only (no IP address): clients verify the name they are told (TEMPORAL_TLS_SERVER_NAME).
    names: list[x509.GeneralName] = [x509.DNSName(host) for host in dict.fromkeys([*SERVER_NAMES, *hosts])]
    wanted = [("server", "temporal", [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH], names)]
    wanted += [(client, f"complaints-{client}", [ExtendedKeyUsageOID.CLIENT_AUTH], None) for client in CLIENTS]
    for name, subject, usage, alt_names in wanted:
        if (out / f"{name}.pem").exists():
            continue
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _issue(subject, key, ca, ca_key, days, usage=usage, alt_names=alt_names)
        _write_key(out / f"{name}.key", key)
        _write_cert(out / f"{name}.pem", cert)
        written += [f"{name}.pem", f"{name}.key"]
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make_certs.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "certs",
                        help="where to write them (default: deploy/tls/certs)")
    parser.add_argument("--host", action="append", default=[], metavar="NAME",
                        help="another DNS name clients reach the frontend by (repeatable)")
    parser.add_argument("--days", type=int, default=825, help="validity of the leaf certificates (default 825)")
    args = parser.parse_args(argv)
    try:
        written = make_certs(args.out, args.host, args.days)
    except (OSError, ValueError) as err:
        print(f"make_certs.py: {err}", file=sys.stderr)
        return 1
    print(f"{args.out}: " + (", ".join(written) if written else "every certificate exists already"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
