"""Secure portal benchmark: encrypted delivery and message views against plain relay, same run.

    .venv/bin/python bench/bench_portal.py [--quick]

Everything runs in one process against a real aiosmtpd sink on 127.0.0.1 (port 0):
- plain relay: `SmtpRelay.deliver` of one copy (a protected message with a PDF attachment)
  to the sink, one after another, for 100 KB and 10 MB messages;
- encrypted delivery: `PortalDelivery.deliver` of the same copies: parse for attachments, seal
  (AES-256-GCM data key, wrapped), store in SQLite, relay the notification;
- portal view: signed-in `GET /portal/{token}` over real TLS (decrypt, parse, sanitise,
  render) for the 100 KB message, CONCURRENCY clients.
Ratios: encrypted msgs/s divided by plain msgs/s, and view requests/s divided by plain 100 KB
relay msgs/s. Prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.certs import make_server_cert
from tests.portalweb import STAFF, PortalWeb, protected_message
from tests.sink import Sink
from transports.base import Copy

CONCURRENCY = 8


def sized_message(size: int) -> bytes:
    """A protected message whose PDF attachment makes it about `size` bytes on the wire."""
    base = protected_message()
    padding = os.urandom(max(0, size * 3 // 4 - len(base)))
    from email import message_from_bytes
    from email.policy import SMTP as SMTP_POLICY

    mail = message_from_bytes(base, policy=SMTP_POLICY)
    mail.add_attachment(padding, maintype="application",  # type: ignore[attr-defined]
                        subtype="octet-stream", filename="scan.bin")
    return mail.as_bytes()


async def rate(action: object, count: int) -> float:
    """Calls per second of `await action(i)` run one after another."""
    start = time.perf_counter()
    for i in range(count):
        await action(i)  # type: ignore[operator]
    return count / (time.perf_counter() - start)


async def measure(web: PortalWeb, size: int, count: int) -> tuple[float, float]:
    data = sized_message(size)
    relay = web.delivery.upstream

    async def plain(i: int) -> None:
        copy = Copy(key=f"plain-{size}-{i}", mail_from=STAFF, recipients=("x@example.org",),
                    data=data)
        assert (await relay.deliver([copy])).ok

    async def encrypted(i: int) -> None:
        copy = Copy(key=f"enc-{size}-{i}", mail_from=STAFF, recipients=("x@example.org",),
                    data=data)
        assert (await web.delivery.deliver([copy])).ok

    await plain(-1)  # warm the connection pool
    plain_rate = await rate(plain, count)
    encrypted_rate = await rate(encrypted, count)
    web.sink.messages.clear()
    return plain_rate, encrypted_rate


async def views(web: PortalWeb, requests: int) -> float:
    token = await web.deliver(sized_message(100 * 1024), key="view")
    async with web.client() as client:
        await web.sign_in(client, token)
        web.deps.per_client.limit = requests * 2
        remaining = requests

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                async with client.get(f"/portal/{token}") as page:
                    assert page.status == 200
                    await page.read()

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return requests / (time.perf_counter() - start)


async def run(quick: bool) -> None:
    small, large, view_count = (20, 2, 100) if quick else (100, 8, 500)
    with tempfile.TemporaryDirectory() as tmp:
        cert = make_server_cert(Path(tmp) / "pki")
        async with Sink() as sink, PortalWeb(Path(tmp) / "data", sink, cert) as web:
            rows = []
            for label, size, count in (("100 KB", 100 * 1024, small),
                                       ("10 MB", 10 * 1024 * 1024, large)):
                plain_rate, encrypted_rate = await measure(web, size, count)
                rows.append((label, plain_rate, encrypted_rate))
            view_rate = await views(web, view_count)
    print("| measure | plain relay msgs/s | portal | ratio to plain |")
    print("|---|---|---|---|")
    for label, plain_rate, encrypted_rate in rows:
        print(f"| encrypted delivery, {label} | {plain_rate:.1f} | {encrypted_rate:.1f} msgs/s "
              f"| {encrypted_rate / plain_rate:.2f} |")
    print(f"| portal message view (100 KB, {CONCURRENCY} clients, TLS) | {rows[0][1]:.1f} "
          f"| {view_rate:.1f} req/s | {view_rate / rows[0][1]:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer messages (a smoke run)")
    args = parser.parse_args()
    asyncio.run(run(args.quick))


if __name__ == "__main__":
    main()
