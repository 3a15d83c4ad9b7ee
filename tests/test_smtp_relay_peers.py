"""Trusted relay peers pinned by client certificate (an Exchange connector's certificate)."""

from __future__ import annotations

import hashlib
import smtplib
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.certs import CertificateAuthority
from tests.gateway_harness import OTHER_STAFF, Harness, message, running_gateway
from tests.sink import Sink

COLLEAGUE = "colleague@cafcass.gov.uk"


def client_cert(ca: CertificateAuthority, name: str) -> tuple[Path, Path, str]:
    """A client certificate signed by `ca`: (cert file, key file, sha256 fingerprint)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    cert_file, key_file = ca.directory / f"{name}.crt", ca.directory / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    fingerprint = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    return cert_file, key_file, fingerprint


def _relay(gw: Harness, cert: tuple[Path, Path, str] | None) -> dict[str, tuple[int, bytes]]:
    """Relay one message without AUTH, over STARTTLS, offering `cert` (or none)."""
    context = gw.client_context()
    if cert is not None:
        context.load_cert_chain(cert[0], cert[1])
    with smtplib.SMTP(gw.host, gw.gateway.smtp_port, timeout=20) as client:
        client.starttls(context=context)
        client.ehlo()
        return client.sendmail(OTHER_STAFF, [COLLEAGUE], message(sender=OTHER_STAFF))


@pytest.mark.parametrize("relay_from", [["127.0.0.0/8"], []], ids=["range-and-cert", "cert-only"])
async def test_pinned_certificate_makes_a_trusted_peer(
    tmp_path: Path, sink: Sink, relay_from: list[str]
) -> None:
    """Only the pinned client certificate relays without AUTH; others and none get 530."""
    ca = CertificateAuthority.create(tmp_path / "peer-ca")
    exchange = client_cert(ca, "exchange")
    stranger = client_cert(ca, "stranger")
    async with running_gateway(
        tmp_path, sink, relay_from=relay_from, relay_client_ca_file=str(ca.ca_file),
        relay_client_cert_fingerprints=[exchange[2].upper()],
    ) as gw:
        assert await gw.run(_relay, gw, exchange) == {}
        for cert in (stranger, None):
            with pytest.raises(smtplib.SMTPSenderRefused) as refused:
                await gw.run(_relay, gw, cert)
            assert refused.value.smtp_code == 530
        assert [m.mail_from for m in sink.messages] == [OTHER_STAFF]


async def test_certificate_from_an_unknown_ca_is_refused(tmp_path: Path, sink: Sink) -> None:
    """A client certificate that the configured CA did not sign fails the TLS handshake."""
    ca = CertificateAuthority.create(tmp_path / "peer-ca")
    other_ca = CertificateAuthority.create(tmp_path / "other-ca", name="other CA")
    pinned = client_cert(ca, "exchange")
    forged = client_cert(other_ca, "exchange")
    async with running_gateway(
        tmp_path, sink, relay_client_ca_file=str(ca.ca_file),
        relay_client_cert_fingerprints=[pinned[2]],
    ) as gw:
        with pytest.raises((ssl.SSLError, smtplib.SMTPServerDisconnected, ConnectionError)):
            await gw.run(_relay, gw, forged)
        assert sink.messages == []
