"""classify_message: from raw bytes to MessageFacts, over real messages built in code."""

from __future__ import annotations

import base64

import pytest

from policies.content import classify_message
from policies.errors import MessageError
from policies.model import Override
from tests.fixtures_content import (
    OLE2_HEADER,
    PNG_HEADER,
    TOP_HEADERS,
    SteppingClock,
    build_message,
    default_rules,
    make_docx,
    make_pdf,
    make_zip_bomb_docx,
    multipart,
)

# Every test here runs under each scan engine (policies/scan.py).
pytestmark = pytest.mark.usefixtures("each_scan_engine")

RULES = default_rules()


def classify(raw: bytes, **limits: float):  # type: ignore[no-untyped-def]
    rules = default_rules(**limits) if limits else RULES
    return classify_message(raw, rules, SteppingClock())


def test_plain_message_is_not_protected() -> None:
    """A message with nothing personal in it is general and not protected."""
    facts = classify(build_message("Team meeting moved to 3pm.", subject="Meeting"))
    assert (facts.information_type, facts.protected, facts.protected_reasons) == \
        ("general", False, ())
    assert facts.malformed == () and facts.attachments == ()
    assert facts.sender_display_name == "Jo Bloggs"


def test_empty_input_raises_message_error() -> None:
    """Empty input is the one input that raises (MessageError)."""
    with pytest.raises(MessageError):
        classify_message(b"", RULES, SteppingClock())


def test_case_numbers_are_normalised_deduplicated_and_ordered() -> None:
    """Case numbers from subject, body and attachments, upper-cased, first seen first."""
    raw = build_message("About lv21p00456 and ZC12C00123 (again LV21P00456).",
                        subject="Re: ZC12C00123",
                        attachments=[("notes.pdf", "application/pdf",
                                      make_pdf(["Also AB34C99999"]))])
    facts = classify(raw)
    assert facts.case_numbers == ("ZC12C00123", "LV21P00456", "AB34C99999")
    assert facts.protected and "case-number" in facts.protected_reasons


def test_identifiers_give_kinds_and_reasons() -> None:
    """Personal identifiers are reported by kind and each is a protected reason."""
    raw = build_message("Child DOB: 01/02/2014. NHS 943 476 5919. NI AB 12 34 56 C. "
                        "PNC 01/12345H.")
    facts = classify(raw)
    assert facts.identifiers == ("date-of-birth", "nhs-number", "ni-number", "pnc-id")
    assert facts.protected_reasons == ("date-of-birth", "nhs-number", "ni-number", "pnc-id")


def test_an_nhs_number_wrapped_at_a_space_is_found() -> None:
    """A client that wraps a long line at a space and drops the space ("943 476\\r\\n5919")
    leaves an NHS number the reader still sees; so does casegate, in plain text and in HTML."""
    plain = classify(build_message("Please find the child's NHS number 943 476\r\n5919 below."))
    assert plain.identifiers == ("nhs-number",) and plain.protected
    html = classify(build_message(None, html="<p>NHS number 943\r\n476 5919</p>"))
    assert html.identifiers == ("nhs-number",)


def test_html_only_body_is_read() -> None:
    """An HTML-only message is read as text, across inline tags and in attributes."""
    raw = build_message(None, html="<html><body><p>Case <b>ZC12</b>C00123</p>"
                        '<img alt="DOB 01/02/2014" src="cid:x"></body></html>')
    facts = classify(raw)
    assert facts.case_numbers == ("ZC12C00123",)
    assert "date-of-birth" in facts.identifiers


def test_html_alternative_is_read_too() -> None:
    """The HTML alternative is classified even when the plain part is innocent."""
    raw = build_message("Please see the HTML version.", html="<p>ZC12C00123</p>")
    assert classify(raw).case_numbers == ("ZC12C00123",)


def test_pdf_named_txt_is_read_as_pdf() -> None:
    """An attachment's real type decides how it is read, not its name or Content-Type."""
    raw = build_message(attachments=[("notes.txt", "text/plain",
                                      make_pdf(["Case ZC12C00123"]))])
    facts = classify(raw)
    (attachment,) = facts.attachments
    assert (attachment.declared_type, attachment.detected_type) == ("text/plain", "pdf")
    assert attachment.readable and facts.case_numbers == ("ZC12C00123",)


def test_docx_named_pdf_is_editable() -> None:
    """A DOCX renamed .pdf is still an editable document (RRP 4.3)."""
    raw = build_message(attachments=[("report.pdf", "application/pdf", make_docx([["x"]]))])
    (attachment,) = classify(raw).attachments
    assert (attachment.detected_type, attachment.editable, attachment.readable) == \
        ("docx", True, True)


def test_encrypted_pdf_protects_the_message() -> None:
    """An encrypted PDF cannot be read, so the message is protected."""
    raw = build_message(attachments=[("a.pdf", "application/pdf",
                                      make_pdf(["x"], password="pw"))])
    facts = classify(raw)
    (attachment,) = facts.attachments
    assert attachment.encrypted and not attachment.readable
    assert facts.protected_reasons == ("unreadable-attachment",)


def test_zip_bomb_docx_protects_the_message() -> None:
    """A DOCX that inflates beyond the budget is unreadable and protects the message."""
    raw = build_message(attachments=[("a.docx", "application/octet-stream",
                                      make_zip_bomb_docx(4 * 1024 * 1024))])
    facts = classify(raw, attachment_bytes=1024 * 1024)
    assert facts.attachments[0].detected_type == "docx"
    assert "unreadable-attachment" in facts.protected_reasons


@pytest.mark.parametrize(("name", "data", "kind"), [
    ("data.bin", b"\x7fELF\x02\x01\x01" + bytes(range(200)), "unknown"),
    ("scan.png", PNG_HEADER, "png"),
    ("old.doc", OLE2_HEADER, "doc"),
])
def test_unreadable_attachments_protect(name: str, data: bytes, kind: str) -> None:
    """Unknown binaries, pictures and legacy Office files protect the message."""
    facts = classify(build_message(attachments=[(name, "application/octet-stream", data)]))
    assert facts.attachments[0].detected_type == kind
    assert facts.protected_reasons == ("unreadable-attachment",)


def test_huge_pdf_is_bounded_by_the_page_budget() -> None:
    """A PDF beyond the page limit is not read: the message is protected, quickly."""
    raw = build_message(attachments=[("big.pdf", "application/pdf", make_pdf(["p"] * 40))])
    facts = classify(raw, max_pdf_pages=10)
    assert not facts.attachments[0].readable and facts.protected


def test_slow_attachments_are_bounded_by_the_message_budget() -> None:
    """Once the message's time budget is spent, later attachments are not read."""
    pdf = make_pdf(["page"] * 3)
    raw = build_message(attachments=[(f"{i}.pdf", "application/pdf", pdf) for i in range(4)])
    rules = default_rules(message_seconds=12.0, attachment_seconds=100.0)
    facts = classify_message(raw, rules, SteppingClock(step=1.0))
    readable = [a.readable for a in facts.attachments]
    assert readable[0] and not readable[-1]


def test_explicit_classification_header_wins() -> None:
    """The classification header names the type, whatever the subject says."""
    raw = build_message(subject="Welcome pack",
                        headers=[("X-Casegate-Classification", "court-report")])
    facts = classify(raw)
    assert facts.information_type == "court-report"
    assert facts.labels == ("classification:court-report",)
    assert facts.protected_reasons == ("label",)


def test_unknown_classification_value_fails_closed() -> None:
    """An unknown classification value is recorded and protects the message."""
    facts = classify(build_message(headers=[("X-Casegate-Classification", "nonsense")]))
    assert facts.labels == ("classification:unknown",) and facts.protected


@pytest.mark.parametrize(("headers", "label"), [
    ([("Sensitivity", "Private")], "sensitivity:private"),
    ([("Sensitivity", "Company-Confidential")], "sensitivity:company-confidential"),
    ([("Sensitivity", "Personal")], "sensitivity:personal"),
    ([("msip_labels", "MSIP_Label_0f1e_Enabled=true; MSIP_Label_0f1e_Name=Official Sensitive;"
                      " MSIP_Label_0f1e_SiteId=abc")], "purview:official-sensitive"),
    ([("X-Protective-Marking", "VER=2012; NS=gov.uk; SEC=OFFICIAL-SENSITIVE")],
     "marking:official-sensitive"),
])
def test_protective_markings_raise_protection(headers: list[tuple[str, str]],
                                              label: str) -> None:
    """Sensitivity, Purview labels and marking headers protect the message (ruling 11)."""
    facts = classify(build_message(headers=headers))
    assert facts.labels == (label,) and facts.protected_reasons == ("label",)


def test_subject_marking_raises_protection() -> None:
    """[OFFICIAL-SENSITIVE] in the subject protects the message."""
    facts = classify(build_message(subject="[OFFICIAL-SENSITIVE] Update"))
    assert facts.labels == ("subject:official-sensitive",) and facts.protected


@pytest.mark.parametrize("headers", [
    [("Sensitivity", "Normal")],
    [("msip_labels", "MSIP_Label_1_Enabled=true; MSIP_Label_1_Name=Public")],
    [("X-Casegate-Classification", "general")],
])
def test_markings_never_lower_protection(headers: list[tuple[str, str]]) -> None:
    """A non-protective marking leaves a case number's protection in place."""
    facts = classify(build_message("Case ZC12C00123", headers=headers))
    assert facts.protected and "case-number" in facts.protected_reasons
    assert "label" not in facts.protected_reasons


@pytest.mark.parametrize(("header", "value"), [
    ("Auto-Submitted", "auto-forwarded"),
    ("X-MS-Exchange-Organization-AutoForwarded", "true"),
    ("X-MS-Exchange-Inbox-Rules-Loop", "jo.bloggs@cafcass.gov.uk"),
    ("X-MS-Exchange-Generated-Message-Source", "Mailbox Rules Agent"),
])
def test_auto_forward_signals(header: str, value: str) -> None:
    """Each of Exchange's and RFC 3834's auto-forward signals is recognised."""
    assert classify(build_message(headers=[(header, value)])).auto_forwarded


def test_auto_replies_are_not_auto_forwards() -> None:
    """Auto-Submitted: auto-replied is not forwarding."""
    assert not classify(build_message(headers=[("Auto-Submitted", "auto-replied")])).auto_forwarded


def test_override_header_is_parsed() -> None:
    """Overrides carry a rule id and a justification; malformed ones are ignored."""
    raw = build_message(headers=[
        ("X-Casegate-Override", "Other-Case-Information; court directed joint report"),
        ("X-Casegate-Override", "editable-document"),
        ("X-Casegate-Override", "fax; ok"),
    ])
    assert classify(raw).overrides == (
        Override("other-case-information", "court directed joint report"),)


@pytest.mark.parametrize(("subject", "attachments", "body", "expected", "reason"), [
    ("Section 7 report", [], "Hello", "court-report", "label"),
    ("Documents", [("Safeguarding_Letter-ZC12C00123.pdf", make_pdf(["x"]))], "Hi",
     "safeguarding-letter", "case-document"),
    ("Documents", [("letter.pdf", make_pdf(["Please find your welcome pack enclosed"]))], "Hi",
     "welcome-pack", "case-document"),
    ("Checks", [], "Please find the police check results below.", "agency-check-result",
     "label"),
    ("Police check request", [("court_report.pdf", make_pdf(["x"]))], "",
     "agency-check-request", "label"),
])
def test_information_type_from_cues(subject: str, attachments: list[tuple[str, bytes]],
                                    body: str, expected: str, reason: str) -> None:
    """Subject labels, then attachment names, then attachment text, then body keywords."""
    raw = build_message(body or "Hi", subject=subject,
                        attachments=[(n, "application/pdf", d) for n, d in attachments])
    facts = classify(raw)
    assert facts.information_type == expected and reason in facts.protected_reasons


def test_nested_multiparts_and_forwarded_messages_are_read() -> None:
    """Parts nested in multiparts and in a forwarded message/rfc822 are all classified."""
    inner_message = (b"From: a@example.org\r\nSubject: LV21P00456\r\n"
                     b"Content-Type: text/plain\r\n\r\nNHS 943 476 5919\r\n")
    forwarded = b"Content-Type: message/rfc822\r\n\r\n" + inner_message
    pdf_part = (b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
                b"Content-Disposition: attachment; filename=a.pdf\r\n\r\n"
                + base64.encodebytes(make_pdf(["ZC12C00123"])))
    inner = multipart("b2", [b"Content-Type: text/plain\r\n\r\nhello", pdf_part])
    raw = TOP_HEADERS + multipart("b1", [inner, forwarded])
    facts = classify(raw)
    assert facts.malformed == ()
    assert facts.case_numbers == ("LV21P00456", "ZC12C00123")
    assert facts.identifiers == ("nhs-number",)
    assert [a.detected_type for a in facts.attachments] == ["pdf"]


def test_over_nesting_is_malformed() -> None:
    """Nesting beyond the limit fails closed."""
    entity = b"Content-Type: text/plain\r\n\r\nhello"
    for level in range(6):
        entity = multipart(f"n{level}", [entity])
    facts = classify(TOP_HEADERS + entity, max_depth=3)
    assert "too-deep" in facts.malformed and facts.protected


def test_too_many_parts_is_malformed() -> None:
    """More parts than the limit fails closed."""
    parts = [b"Content-Type: text/plain\r\n\r\nx"] * 12
    facts = classify(TOP_HEADERS + multipart("m", parts), max_parts=10)
    assert "too-many-parts" in facts.malformed and "malformed" in facts.protected_reasons


def test_oversized_message_is_malformed_but_headers_are_read() -> None:
    """A message over the size limit is not read, but its headers still count."""
    raw = build_message("x" * 5000, headers=[("Auto-Submitted", "auto-forwarded")])
    facts = classify(raw, max_message_bytes=1000)
    assert facts.malformed == ("too-large",) and facts.auto_forwarded and facts.protected


@pytest.mark.parametrize(("raw", "code"), [
    (TOP_HEADERS + b"Content-Type: multipart/mixed\r\n\r\nno boundary here\r\n",
     "boundary-missing"),
    (TOP_HEADERS + b'Content-Type: multipart/mixed; boundary="zz"\r\n\r\nnever opened\r\n',
     "boundary-missing"),
    (TOP_HEADERS + b'Content-Type: multipart/mixed; boundary="zz"\r\n\r\n--zz\r\n'
     b"Content-Type: text/plain\r\n\r\ncut short\r\n", "boundary-unclosed"),
    (TOP_HEADERS + b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
     b"\r\n!!!not base64!!!\r\n", "undecodable-part"),
    (TOP_HEADERS + b"X-Note: =?utf-8?q?a=0D=0ABcc:_x@evil.example?=\r\n\r\nhi\r\n",
     "header-line-break"),
    (b"To: a@example.org\r\nSubject: no sender\r\n\r\nhi\r\n", "missing-from"),
    (TOP_HEADERS + b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: x-secret\r\n"
     b"\r\nJVBERi0=\r\n", "unknown-transfer-encoding"),
    (b" continuation first\r\nFrom: a@example.org\r\n\r\nhi\r\n", "header-structure"),
])
def test_malformed_mime_fails_closed(raw: bytes, code: str) -> None:
    """Broken structure is named in `malformed` and protects the message."""
    facts = classify(raw)
    assert code in facts.malformed
    assert facts.protected and "malformed" in facts.protected_reasons


def test_undecodable_charset_still_reads_the_body() -> None:
    """An unknown charset name does not stop the body being read."""
    raw = (TOP_HEADERS + b"Content-Type: text/plain; charset=x-no-such-charset\r\n\r\n"
           b"Case ZC12C00123\r\n")
    assert classify(raw).case_numbers == ("ZC12C00123",)


def test_facts_hold_no_names_or_subjects() -> None:
    """Attachment facts carry types and sizes, never names (DESIGN ruling 8)."""
    raw = build_message(subject="Secret subject",
                        attachments=[("Amy Smith report.pdf", "application/pdf",
                                      make_pdf(["x"]))])
    facts = classify(raw)
    assert "Amy" not in repr(facts) and "Secret subject" not in repr(facts)


def _with_inline_logo(size: int, disposition: str = "inline") -> bytes:
    """An HTML message whose body shows an image by Content-ID, as an Outlook signature does."""
    from email.message import EmailMessage
    from email.policy import SMTP

    message = EmailMessage(policy=SMTP)
    message["From"] = "Jo Bloggs <jo.bloggs@cafcass.gov.uk>"
    message["To"] = "someone@example.org"
    message["Subject"] = "Room booking"
    message.set_content("The room is booked.")
    message.add_alternative('<p>The room is booked.</p><img src="cid:logo1">', subtype="html")
    html_part = message.get_payload()[1]
    html_part.add_related(PNG_HEADER + b"\x00" * (size - len(PNG_HEADER)), maintype="image",
                          subtype="png", cid="<logo1>", disposition=disposition)
    return message.as_bytes()


def test_small_inline_signature_logo_does_not_protect_the_message() -> None:
    """A small inline image shown by Content-ID is a logo, not an unreadable scan."""
    facts = classify(_with_inline_logo(4_000))
    assert facts.protected is False
    assert all(a.readable for a in facts.attachments)


@pytest.mark.parametrize(("size", "disposition"), [(200_000, "inline"), (4_000, "attachment")])
def test_large_or_attached_images_still_count_as_unreadable(size: int, disposition: str) -> None:
    """A big inline image or an attached picture may be a scanned letter: protected."""
    facts = classify(_with_inline_logo(size, disposition))
    assert facts.protected is True
    assert "unreadable-attachment" in facts.protected_reasons
