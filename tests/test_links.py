"""Links in emails: one base URL (`gateway.config.public_url`) for portal, verification, alerts."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from gateway.app import workflow_settings as settings_from
from gateway.audit.alerts import AlertSettings
from gateway.config import AuditConfig, Config, HttpConfig, SmtpConfig, public_url
from tests.gateway_harness import STAFF, running_gateway
from tests.portalweb import protected_message, text_of
from tests.sink import Sink

MUM = "mum@example.org"


def _config(**http: object) -> Config:
    return Config(http=replace(HttpConfig(), **http),  # type: ignore[arg-type]
                  audit=replace(AuditConfig(), governance_address="gov@cafcass.gov.uk"))


@pytest.mark.parametrize(("http", "expected"), [
    ({}, "https://127.0.0.1:8025"),
    ({"tls": False}, "http://127.0.0.1:8025"),
    ({"host": "gateway.cafcass.example", "port": 443}, "https://gateway.cafcass.example:443"),
    ({"host": "::1"}, "https://[::1]:8025"),
    ({"host": "0.0.0.0"}, "https://casegate.localhost:8025"),
    ({"public_url": "https://secure.cafcass.example/"}, "https://secure.cafcass.example"),
    ({"public_url": "https://secure.cafcass.example", "tls": False},
     "https://secure.cafcass.example"),
])
def test_public_url(http: dict[str, object], expected: str) -> None:
    """The base is public_url when set, else http(s) by http.tls with the host and port."""
    assert public_url(_config(**http)) == expected


def test_bound_port_replaces_port_zero() -> None:
    """The port actually bound is used when known; public_url, when set, wins over it."""
    assert public_url(_config(port=0), 40123) == "https://127.0.0.1:40123"
    assert public_url(_config(public_url="https://x.example"), 40123) == "https://x.example"


def test_wildcard_host_uses_the_smtp_hostname() -> None:
    """A wildcard listen address links to the SMTP host name on the certificate."""
    config = replace(_config(host="::"), smtp=replace(SmtpConfig(), hostname="cg.example"))
    assert public_url(config) == "https://cg.example:8025"


@pytest.mark.parametrize("http", [{}, {"tls": False}, {"public_url": "https://x.example/"}])
def test_verification_and_alerts_share_the_base(http: dict[str, object]) -> None:
    """Verification and alert emails use the same base, http:// when TLS is off."""
    config = _config(**http)
    alerts = AlertSettings.from_config(config)
    assert alerts is not None
    assert settings_from(config).public_url == alerts.public_url == public_url(config)


async def test_portal_link_uses_the_configured_host(tmp_path: Path, sink: Sink) -> None:
    """A portal notification links to the HTTP host as configured, on the bound port."""
    async with running_gateway(tmp_path, sink) as gw:
        gw.verify(MUM, "FD24P01234")
        assert await gw.run(gw.send, STAFF, [MUM], protected_message(to=MUM)) == {}
        (notice,) = [m for m in gw.sink.messages if m.rcpt_tos == (MUM,)]
        base = public_url(gw.app.config, gw.gateway.http_port)
        assert base == f"https://127.0.0.1:{gw.gateway.http_port}"
        assert re.search(rf"^{re.escape(base)}/portal/[A-Za-z0-9_\-]+\r?$", text_of(notice),
                         re.MULTILINE)
