"""DKIM signatures on the mail casegate writes or rewrites, in one place: the way out.

Exchange Online signs outbound mail before it reaches its smart host. A split copy whose To and
Cc casegate rewrote no longer matches that signature, and a receiving domain whose DMARC policy
is p=reject (gov.uk publishes it) may refuse it; the notifications, codes and alerts casegate
writes itself carry no signature at all. So every copy whose `Copy.origin` says casegate wrote
or changed it is signed with the organisation's key (rsa-sha256, relaxed/relaxed, through
dkimpy) as it is handed to the transport; a copy relayed unchanged (trace fields on top aside)
keeps exactly the signatures it came with, and nothing here ever removes or alters one.

`SigningTransport` wraps the way out (the SMTP relay or the outbox). Signing takes about 7 ms
for a 10 KB message (6 ms of it dkimpy's RSA in pure Python) and 70-75 ms for 2 MB (mostly the
body's canonicalisation), so it runs in a worker thread: the event loop then stalls at most
about 9 ms (10 KB) or 21 ms (2 MB), the longest single calls that hold the GIL (the RSA power,
one regular-expression pass over the body), instead of the whole time. A copy that cannot be
signed is not sent unsigned: it fails PERMANENT.

Keys: `make_key()` makes a 2048-bit RSA key; `txt_record()` and `zone_line()` give the DNS
record that publishes its public half (`casegate keys dkim`).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import dkim
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from transports.base import Copy, DeliveryResult, Outcome, Ready, Transport

log = structlog.get_logger("casegate.dkim")

KEY_BITS = 2048
# Header fields signed by default: what a reader sees and what threads the conversation. Never
# trace fields (Received, X-Casegate-Decision) that relays add on top.
DEFAULT_HEADERS = (
    "from", "sender", "reply-to", "subject", "date", "message-id", "to", "cc",
    "in-reply-to", "references", "mime-version", "content-type",
    "content-transfer-encoding",
)
TXT_STRING_LIMIT = 255  # octets in one character-string of a TXT record (RFC 1035 3.3)


class DkimKeyError(ValueError):
    """The DKIM key cannot be used; the message says which file and why, in one sentence."""


@dataclass(frozen=True)
class DkimSigner:
    """Signs messages for `domain` with the key published at `selector`._domainkey.`domain`."""

    domain: str
    selector: str
    private_key: bytes  # PEM
    headers: tuple[str, ...] = DEFAULT_HEADERS

    @classmethod
    def load(cls, key_file: Path, domain: str, selector: str,
             headers: Sequence[str] = DEFAULT_HEADERS) -> DkimSigner:
        """The signer for `key_file`; `DkimKeyError` when it is missing, unreadable or no key."""
        try:
            pem = key_file.read_bytes()
        except OSError as exc:
            raise DkimKeyError(
                f"the DKIM key {key_file} cannot be read ({exc.__class__.__name__}); make one "
                f"with 'casegate keys dkim'") from None
        signer = cls(domain=domain, selector=selector, private_key=pem,
                     headers=tuple(h.lower() for h in headers))
        try:
            signer.sign(b"From: check@" + domain.encode("ascii") + b"\r\n\r\ncheck\r\n")
        except (dkim.DKIMException, UnicodeEncodeError, ValueError):
            raise DkimKeyError(f"the DKIM key {key_file} is not an RSA private key in PEM "
                               f"form, or the domain or selector is not valid") from None
        return signer

    def sign(self, data: bytes) -> bytes:
        """`data` (CRLF line endings) with a DKIM-Signature field on top."""
        field = dkim.sign(
            data, self.selector.encode("ascii"), self.domain.encode("ascii"), self.private_key,
            canonicalize=(b"relaxed", b"relaxed"), signature_algorithm=b"rsa-sha256",
            include_headers=[h.encode("ascii") for h in self.headers], linesep=b"\r\n",
        )
        return bytes(field) + data


class SigningTransport:
    """A Transport that signs the copies casegate wrote or rewrote, then hands every copy on."""

    def __init__(self, inner: Transport, signer: DkimSigner) -> None:
        self.inner = inner
        self.signer = signer

    async def deliver(self, copies: Sequence[Copy],
                      ready: Ready | None = None) -> DeliveryResult:
        signed: list[Copy] = []
        for copy in copies:
            if not copy.origin.needs_signature:
                signed.append(copy)
                continue
            try:
                signed.append(await self._signed(copy))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Never unsigned: a copy that cannot be signed now never will be.
                log.error("dkim.sign_failed", key=copy.key, error=exc.__class__.__name__)
                return DeliveryResult(Outcome.PERMANENT, f"DKIM signing failed: "
                                      f"{exc.__class__.__name__}")
        return await self.inner.deliver(signed, ready)

    async def close(self) -> None:
        await self.inner.close()

    async def _signed(self, copy: Copy) -> Copy:
        return replace(copy, data=await asyncio.to_thread(self.signer.sign, copy.data))


def make_key() -> bytes:
    """A new 2048-bit RSA private key, PEM (PKCS#1, which every DKIM tool reads)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def txt_record(private_key: bytes) -> str:
    """The TXT record's value that publishes the public half of `private_key` (PEM)."""
    try:
        key = serialization.load_pem_private_key(private_key, password=None)
    except (ValueError, TypeError):
        raise DkimKeyError("the DKIM key is not a private key in PEM form") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise DkimKeyError("the DKIM key is not an RSA key")
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode('ascii')}"


def zone_line(selector: str, domain: str, value: str) -> str:
    """One zone-file line for the record: the value cut into strings of at most 255 octets."""
    parts = [value[i:i + TXT_STRING_LIMIT] for i in range(0, len(value), TXT_STRING_LIMIT)]
    strings = " ".join(f'"{part}"' for part in parts)
    return f"{selector}._domainkey.{domain.rstrip('.')}. IN TXT {strings}"


def key_path(data_dir: Path, key_file: str, selector: str) -> Path:
    """Where the key lives: `key_file` (relative to the data directory), else
    `dkim-<selector>.pem` in the data directory."""
    path = Path(key_file) if key_file else Path(f"dkim-{selector}.pem")
    return path if path.is_absolute() else data_dir / path
