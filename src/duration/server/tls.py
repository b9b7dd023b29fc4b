"""The team server's TLS: a private CA the project generates once, and a server certificate
it signs for the names clients use (127.0.0.1, localhost, and the `--host` address).

Everything lives under `.mlflow/tls/`: `ca.pem` (give it to clients, as
MLFLOW_TRACKING_SERVER_CERT_PATH), `ca-key.pem`, `server.pem` and `server-key.pem`, the
keys 0600. The server certificate is issued again when it nears its end or the names
change; the CA is kept (clients keep trusting it).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from duration.infra.files import write_atomic

CA_DAYS = 3650
SERVER_DAYS = 397  # what browsers accept for a server certificate
RENEW_DAYS = 30  # issued again when fewer days than this are left


@dataclass(frozen=True)
class Tls:
    """The files of the team server's TLS."""

    folder: Path

    @property
    def ca(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.folder / "ca-key.pem"

    @property
    def cert(self) -> Path:
        return self.folder / "server.pem"

    @property
    def key(self) -> Path:
        return self.folder / "server-key.pem"


def _name(common: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "duration team server"),
            x509.NameAttribute(NameOID.COMMON_NAME, common),
        ]
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _san(hosts: list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    return x509.SubjectAlternativeName(names)


def _ca(tls: Tls, now: dt.datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The CA: read back, or made once."""
    if tls.ca.exists() and tls.ca_key.exists():
        key = serialization.load_pem_private_key(tls.ca_key.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return x509.load_pem_x509_certificate(tls.ca.read_bytes()), key
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name("duration team CA")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    write_atomic(tls.ca_key, _key_pem(key), mode=0o600)
    write_atomic(tls.ca, cert.public_bytes(serialization.Encoding.PEM).decode())
    return cert, key


def _current(tls: Tls, hosts: list[str], now: dt.datetime) -> bool:
    """True when the server certificate exists, names `hosts`, and is not near its end."""
    try:
        cert = x509.load_pem_x509_certificate(tls.cert.read_bytes())
    except (OSError, ValueError):
        return False
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return san == _san(hosts) and cert.not_valid_after_utc - now > dt.timedelta(days=RENEW_DAYS)


def ensure(
    folder: Path,
    hosts: list[str],
    *,
    days: int = SERVER_DAYS,
    now: dt.datetime | None = None,
    force: bool = False,
) -> Tls:
    """The CA (made once) and a server certificate for `hosts`, valid `days` from `now`
    (issued again only when needed, or when `force`)."""
    tls = Tls(folder)
    folder.mkdir(parents=True, exist_ok=True)
    now = now or dt.datetime.now(dt.UTC)
    ca, ca_key = _ca(tls, now)
    if not force and _current(tls, hosts, now):
        return tls
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(_san(hosts), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    write_atomic(tls.key, _key_pem(key), mode=0o600)
    write_atomic(tls.cert, cert.public_bytes(serialization.Encoding.PEM).decode())
    return tls
