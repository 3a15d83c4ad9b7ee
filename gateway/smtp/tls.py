"""The gateway's own TLS certificate and the server-side SSL contexts built from it.

On first start, `ensure_certificate` makes a self-signed certificate and key (ECDSA P-256, made
with `cryptography`) in the data directory, both files mode 0600. An organisation replaces them
with its own by putting `tls.crt` and `tls.key` there. Server contexts accept TLS 1.2 and later.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.config import StartupError, os_reason

CERT_FILE = "tls.crt"
KEY_FILE = "tls.key"
VALID_DAYS = 825  # the longest lifetime clients accept for a server certificate


@dataclass(frozen=True)
class CertificatePair:
    """Where the gateway's certificate and key are on disk."""

    cert_file: Path
    key_file: Path

    def server_context(
        self, client_certs: bool = False, client_ca_file: str = ""
    ) -> ssl.SSLContext:
        """A TLS server context presenting this certificate (TLS 1.2 or later).

        `client_certs`: ask every client for a certificate (optional for them) and verify one
        that is offered against `client_ca_file`, else the system's CAs. Used when relay peers
        are pinned by certificate fingerprint.
        """
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise StartupError(
                f"the certificate {self.cert_file} or its key {self.key_file} cannot be used "
                f"({_reason(exc)}); fix them, or remove both to have casegate make new ones"
            ) from None
        if client_certs:
            context.verify_mode = ssl.CERT_OPTIONAL
            if client_ca_file:
                try:
                    context.load_verify_locations(cafile=client_ca_file)
                except (OSError, ssl.SSLError) as exc:
                    raise StartupError(f"'smtp.relay_client_ca_file' {client_ca_file} cannot "
                                       f"be used ({_reason(exc)})") from None
            else:
                context.load_default_certs(ssl.Purpose.CLIENT_AUTH)
        return context


def _reason(exc: OSError | ssl.SSLError) -> str:
    """Why a certificate file did not load, in a few words."""
    if isinstance(exc, ssl.SSLError):
        return "not a PEM certificate and its matching key"
    return os_reason(exc)


def certificate_fingerprint(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> str:
    """The SHA-256 fingerprint (lower-case hex) of the peer's certificate, "" when none."""
    if ssl_object is None:
        return ""
    der = ssl_object.getpeercert(binary_form=True)
    return hashlib.sha256(der).hexdigest() if der else ""


def normalise_fingerprint(text: str) -> str:
    """"AB:CD:..." or "abcd..." -> "abcd..."."""
    return text.replace(":", "").replace(" ", "").strip().lower()


def ensure_certificate(data_dir: Path, hostname: str) -> CertificatePair:
    """The certificate in `data_dir`, made self-signed for `hostname` if there is none yet."""
    pair = CertificatePair(cert_file=data_dir / CERT_FILE, key_file=data_dir / KEY_FILE)
    if pair.cert_file.exists() and pair.key_file.exists():
        return pair
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _self_signed(key, hostname)
    _write_private(pair.key_file, key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))
    _write_private(pair.cert_file, cert.public_bytes(serialization.Encoding.PEM))
    return pair


def _self_signed(key: ec.EllipticCurvePrivateKey, hostname: str) -> x509.Certificate:
    names: list[x509.GeneralName] = []
    for name in dict.fromkeys((hostname, "localhost", "127.0.0.1", "::1")):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            names.append(x509.DNSName(name))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )


def _write_private(path: Path, content: bytes) -> None:
    """Write `content` to a new file readable by its owner only (0600 from the first byte)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
    os.chmod(path, 0o600)
