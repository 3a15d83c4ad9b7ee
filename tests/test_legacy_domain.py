"""The agency's legacy secure domain (cafcass.gsi.gov.uk) is its own: internal (issue 17).

The FOI replies give Governance@cafcass.gsi.gov.uk as the address for breach reports (IA 2.2).
Over real sockets: a breach report naming a case goes through the SMTP front to a real upstream
sink, decided "internal"; an organisation whose policy file takes the domain out of its internal
list gets it treated as the outside secure address it then is (verification first).
"""

from __future__ import annotations

import smtplib
from pathlib import Path

import pytest

from gateway.audit.store import EventFilter
from tests.gateway_harness import STAFF, message, running_gateway
from tests.sink import Sink

GOVERNANCE_MAILBOX = "Governance@cafcass.gsi.gov.uk"
BREACH_REPORT = ("Breach report (IA 2.2): a safeguarding letter for case ZC12C00123 was sent to "
                 "the wrong postal address on Monday. The family has been told.")


async def test_a_breach_report_to_governance_on_the_legacy_domain_is_delivered(
        tmp_path: Path, sink: Sink) -> None:
    """A protected breach report to Governance@cafcass.gsi.gov.uk, from a practitioner with no
    verification of that address, reaches the upstream sink as sent, in plain text."""
    async with running_gateway(tmp_path, sink) as gw:
        data = message(to=[GOVERNANCE_MAILBOX], body=BREACH_REPORT, subject="Breach report")
        refused = await gw.run(gw.send, STAFF, [GOVERNANCE_MAILBOX], data)
        assert refused == {}
        (received,) = sink.messages
        assert received.rcpt_tos == (GOVERNANCE_MAILBOX,)
        assert received.data.endswith(data[data.index(b"\r\n\r\n"):])  # the body as sent
        [decision] = gw.app.audit.page(EventFilter(kind="decision"))
        assert decision.metadata["protected"] is True  # a case, yet no verification needed
        assert decision.metadata["actions"] == ["plain"]
        assert list(decision.case_numbers) == ["ZC12C00123"]
        assert gw.app.audit.page(EventFilter(kind="refusal")) == []


async def test_an_organisation_file_can_take_the_legacy_domain_out(
        tmp_path: Path, sink: Sink) -> None:
    """The internal list is policy data like the others: an organisation file that replaces it
    makes the legacy domain an outside secure address again, so protected mail needs a
    verification first (refused whole, nothing leaves)."""
    (tmp_path / "org-policy.toml").write_text('[domains]\ninternal = ["cafcass.gov.uk"]\n',
                                              encoding="utf-8")
    extra = '[policy]\nfiles = ["org-policy.toml"]\n'
    async with running_gateway(tmp_path, sink, extra_config=extra) as gw:
        assert gw.app.policy.internal_domains == ("cafcass.gov.uk",)
        data = message(to=[GOVERNANCE_MAILBOX], body=BREACH_REPORT)
        with pytest.raises(smtplib.SMTPDataError) as refused:
            await gw.run(gw.send, STAFF, [GOVERNANCE_MAILBOX], data)
        assert refused.value.smtp_code == 550
        assert b"has not been verified" in refused.value.smtp_error
        assert sink.messages == []
