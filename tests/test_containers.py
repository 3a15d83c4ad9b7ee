"""Containers are opened (DESIGN ruling 22): zip archives, attached messages (.eml, message/rfc822,
Outlook .msg), the objects embedded in Office documents and PDFs. What they hold is classified
as if attached; what cannot be opened (encrypted, damaged, over a budget) protects the message
and is refused for outside recipients, and hostile inputs always get a decision."""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from importlib import resources

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies import containers
from policies.content import classify_message
from policies.content_rules import ContentRules
from policies.engine import decide
from policies.loader import EMBEDDED_FILES, Policy, parse_policy
from policies.model import Action, Attachment, MessageFacts, Role, Snapshot, Verdict, Verification
from tests.containerkit import (
    declared_size_zip,
    deflate_bomb,
    docx_with,
    eml_chain,
    encrypted_ooxml,
    encrypted_zip,
    forwarded_chain,
    inner_message,
    lying_bomb,
    make_zip,
    nested_zip,
    odf_object,
    odt_with,
    pdf_with_zeros_attached,
    wide_zip,
)
from tests.fixtures_content import (
    PNG_HEADER,
    SteppingClock,
    build_message,
    default_rules,
    make_docx,
    make_pdf,
)
from tests.olekit import (
    Msg,
    make_cfb,
    make_legacy_word,
    make_msg,
    make_ole_package,
    nested_msg,
    package_object,
)

CASE = "ZC12C00123"
SENDER = "jo.bloggs@cafcass.gov.uk"
PARENT = "dad@hotmail.co.uk"  # verified for CASE: protected mail goes to him encrypted
COLLEAGUE = "manager@cafcass.gov.uk"
NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
SNAPSHOT = Snapshot(now=NOW, verified=(Verification(PARENT, CASE, Role.PARTY),))


def _policy() -> Policy:
    data = resources.files("policies").joinpath("data")
    return parse_policy([(name, data.joinpath(name).read_text("utf-8"))
                         for name in EMBEDDED_FILES])


POLICY = _policy()
DOCX = make_docx([[f"Report for case {CASE}"]])
PDF = make_pdf([f"Letter about case {CASE}"])


def attached(name: str, data: bytes, content_type: str = "application/octet-stream") -> bytes:
    return build_message("Please see attached.", subject="Documents",
                         attachments=[(name, content_type, data)])


def classify(raw: bytes, rules: ContentRules | None = None,
             clock: Callable[[], float] | None = None) -> MessageFacts:
    return classify_message(raw, rules or default_rules(), clock or SteppingClock())


def inner(facts: MessageFacts) -> list[tuple[str, int]]:
    """The (detected type, depth) of every attachment, in order."""
    return [(a.detected_type, a.depth) for a in facts.attachments]


def outside_and_inside(facts: MessageFacts) -> tuple[list[str], Verdict]:
    """The refusals for the verified parent, and the verdict for a colleague."""
    outside = decide(facts, SENDER, [PARENT], POLICY, SNAPSHOT)
    inside = decide(facts, SENDER, [COLLEAGUE], POLICY, SNAPSHOT)
    return [r.rule.id for r in outside.refusals], inside.verdict


# --- what is inside is classified as if attached -------------------------------------------

MSG_WITH_DOCX = make_msg("Report", "See the attached report.", attachments=[("r.docx", DOCX)])
OLE_PDF = make_ole_package("letter.pdf", PDF)

READ_INSIDE = [
    ("docx in a zip", attached("docs.zip", make_zip([("report.docx", DOCX)])),
     [("zip", 0), ("docx", 1)]),
    ("docx in a zip in a zip", attached("docs.zip", nested_zip(2, [("report.docx", DOCX)])),
     [("zip", 0), ("zip", 1), ("docx", 2)]),
    ("docx in an attached .eml",
     attached("fwd.eml", inner_message(attachments=[("r.docx", "application/octet-stream",
                                                      DOCX)])),
     [("eml", 0), ("docx", 1)]),
    ("docx in a forwarded message/rfc822",
     forwarded_chain(1, inner_message(attachments=[("r.docx", "application/octet-stream",
                                                     DOCX)])),
     [("docx", 1)]),
    ("docx in an Outlook .msg", attached("mail.msg", MSG_WITH_DOCX), [("msg", 0), ("docx", 1)]),
    ("docx in a .msg attached to a .msg",
     attached("mail.msg", make_msg("FW", "fyi", messages=[Msg(attachments=[("r.docx", DOCX)])])),
     [("msg", 0), ("docx", 2)]),
    ("docx embedded in a docx",
     attached("cover.docx", docx_with({"word/embeddings/Microsoft_Word_Document.docx": DOCX})),
     [("docx", 0), ("docx", 1)]),
    ("PDF in an OLE Package embedded in a docx",
     attached("cover.docx", docx_with({"word/embeddings/oleObject1.bin": OLE_PDF})),
     [("docx", 0), ("ole-package", 1), ("pdf", 2)]),
    ("PDF in an OLE object of an ODT", attached("cover.odt", odt_with({"Object 1": OLE_PDF})),
     [("odt", 0), ("ole-package", 1), ("pdf", 2)]),
    ("text of an ODF object embedded in an ODT",
     attached("cover.odt", odt_with({"Object 2/content.xml": odf_object(f"Case {CASE}")})),
     [("odt", 0)]),
    ("docx attached inside a PDF", attached("cover.pdf", make_pdf(["Cover"], embedded=DOCX)),
     [("pdf", 0), ("docx", 1)]),
    ("PDF in a zip in a .msg in a zip",
     attached("all.zip", make_zip([("m.msg", make_msg(attachments=[
         ("d.zip", make_zip([("letter.pdf", PDF)]))]))])),
     [("zip", 0), ("msg", 1), ("zip", 2), ("pdf", 3)]),
]


@pytest.mark.parametrize(("raw", "expected"), [c[1:] for c in READ_INSIDE],
                         ids=[c[0] for c in READ_INSIDE])
def test_what_is_inside_is_read_as_if_attached(raw: bytes, expected: list[tuple[str, int]]
                                               ) -> None:
    """Each file inside becomes an attachment one level deeper, and its text is read."""
    facts = classify(raw)
    assert inner(facts) == expected
    assert facts.case_numbers == (CASE,)
    assert all(a.readable and not a.unopened for a in facts.attachments)


def test_an_editable_document_in_a_zip_is_refused_outside_like_one_attached_bare() -> None:
    """RRP 4.3 cannot be sidestepped by zipping: the same refusal as for the bare document."""
    zipped = outside_and_inside(classify(attached("a.zip", make_zip([("r.docx", DOCX)]))))
    bare = outside_and_inside(classify(attached("r.docx", DOCX)))
    assert zipped == bare == (["editable-document"], Verdict.DELIVER)


def test_inner_file_names_are_read_as_attachment_names() -> None:
    """A case number in the name of a file inside an archive protects the message."""
    facts = classify(attached("a.zip", make_zip([(f"{CASE} notes.txt", b"see me")])))
    assert facts.case_numbers == (CASE,)


@pytest.mark.parametrize("name", ["../../etc/passwd.docx", "..\\..\\Windows\\r.docx",
                                  "/abs/r.docx", "a/../../r.docx"])
def test_path_names_that_climb_out_are_only_names(name: str) -> None:
    """Nothing is ever written to disk: a climbing path is a name, read like any other."""
    facts = classify(attached("a.zip", make_zip([(name, DOCX)])))
    assert inner(facts) == [("zip", 0), ("docx", 1)]
    assert outside_and_inside(facts) == (["editable-document"], Verdict.DELIVER)


def test_msg_subject_html_body_and_embedded_message_are_read() -> None:
    """An Outlook message's subject, HTML body and the messages attached to it are read."""
    msg = make_msg("Hearing", body=None, html=f"<p>Case <b>{CASE}</b></p>",
                   messages=[Msg(subject="ZC12C00456 checks")])
    facts = classify(attached("m.msg", msg))
    assert set(facts.case_numbers) == {CASE, "ZC12C00456"}


def test_a_plain_text_file_is_not_taken_for_a_message() -> None:
    """Text that starts like a header is still text unless it is a whole header block."""
    facts = classify(attached("notes.txt", b"Subject: minutes\r\n\r\nnothing else"))
    assert inner(facts) == [("text", 0)]


# --- what cannot be opened is refused outside, delivered inside ------------------------------

def _encrypted_pdf() -> bytes:
    return make_pdf([f"Case {CASE}"], password="secret")


UNOPENED = [
    ("encrypted zip", attached("a.zip", encrypted_zip([("r.pdf", b"%PDF-1.4")])),
     ("zip", 0, "encrypted")),
    ("encrypted zip inside a zip",
     attached("a.zip", make_zip([("inner.zip", encrypted_zip([("r.pdf", b"%PDF")]))])),
     ("zip", 1, "encrypted")),
    ("password-protected Word document (OOXML)", attached("r.docx", encrypted_ooxml()),
     ("doc", 0, "encrypted")),
    ("password-protected legacy Word document", attached("r.doc", make_legacy_word(True)),
     ("doc", 0, "encrypted")),
    ("password-protected PDF", attached("r.pdf", _encrypted_pdf()), ("pdf", 0, "encrypted")),
    ("password-protected PDF in a .msg",
     attached("m.msg", make_msg(attachments=[("r.pdf", _encrypted_pdf())])),
     ("pdf", 1, "encrypted")),
    ("7z archive", attached("a.7z", b"7z\xbc\xaf\x27\x1c\x00\x04" + b"\x00" * 60),
     ("7z", 0, "unsupported")),
    ("rar archive", attached("a.rar", b"Rar!\x1a\x07\x01\x00" + b"\x00" * 60),
     ("rar", 0, "unsupported")),
    ("damaged zip", attached("a.zip", make_zip([("a.txt", b"x" * 100)])[:60]),
     ("zip", 0, "damaged")),
    (".msg with only an RTF body", attached("m.msg", make_msg(rtf_only=True)),
     ("msg", 0, "unsupported")),
    (".msg attachment that is an OLE object of its own",
     attached("m.msg", make_msg(ole_objects=[{"WordDocument": b"\x00" * 600}])),
     ("msg", 0, "unsupported")),
    (".msg with a file Outlook would not show (an unknown storage)",
     attached("m.msg", make_cfb({**Msg().tree(), "hidden": {"r.docx": DOCX}})),
     ("msg", 0, "damaged")),
]


@pytest.mark.parametrize(("raw", "expected"), [c[1:] for c in UNOPENED],
                         ids=[c[0] for c in UNOPENED])
def test_what_cannot_be_opened_is_refused_outside_and_delivered_inside(
        raw: bytes, expected: tuple[str, int, str]) -> None:
    """Protected (unreadable), refused for the verified parent with unreadable-container, and
    delivered to a colleague."""
    facts = classify(raw)
    kind, depth, reason = expected
    assert [(a.detected_type, a.depth, a.unopened) for a in facts.attachments
            if a.unopened] == [(kind, depth, reason)]
    assert "unreadable-attachment" in facts.protected_reasons
    refusals, inside = outside_and_inside(facts)
    assert "unreadable-container" in refusals
    assert inside is Verdict.DELIVER


def test_the_refusal_tells_the_sender_to_send_pdfs_through_the_portal() -> None:
    """The sentence says why and what to do instead; the detail names types, never names."""
    facts = classify(attached("secret-plans.zip", encrypted_zip([("r.pdf", b"%PDF")])))
    decision = decide(facts, SENDER, [PARENT, COLLEAGUE], POLICY, SNAPSHOT)
    [refusal] = decision.refusals
    assert refusal.rule.citation.startswith("RRP 4.3")
    assert "PDF" in refusal.rule.sentence and "portal" in refusal.rule.sentence
    assert refusal.detail == "zip (encrypted)"
    assert decision.verdict is Verdict.REFUSE


def test_a_pdf_that_opens_without_a_password_is_read() -> None:
    """Encrypted with an empty user password (permissions only), a PDF opens for anyone."""
    facts = classify(attached("r.pdf", make_pdf([f"Case {CASE}"], password="")))
    assert facts.case_numbers == (CASE,)
    assert not facts.attachments[0].unopened
    assert outside_and_inside(facts) == ([], Verdict.DELIVER)


def test_a_scan_stays_protected_only() -> None:
    """Other unreadable content (a picture) protects the message but is not refused (ruling 2)."""
    facts = classify(attached("scan.png", PNG_HEADER, "image/png"))
    assert facts.protected and not facts.attachments[0].unopened
    assert outside_and_inside(facts) == ([], Verdict.DELIVER)
    decision = decide(facts, SENDER, [PARENT], POLICY, SNAPSHOT)
    assert decision.recipients[0].action is Action.ENCRYPT


# --- hostile inputs: a decision every time, within every budget -----------------------------

def _corrupt_msg_stream() -> bytes:
    """A .msg whose body stream says it is bigger than the mini stream cutoff, so its chain is
    followed through the FAT from a mini sector's number: a stream that is not there."""
    msg = bytearray(make_msg("Hello", "short body"))
    name = "__substg1.0_1000001F".encode("utf-16-le")
    entry = msg.index(name)
    struct.pack_into("<I", msg, entry + 120, 70_000)
    return bytes(msg)


def _many_empty_files(count: int) -> bytes:
    return make_zip([(f"f{i}.txt", b"") for i in range(count)], compression=0)


HOSTILE = [
    # (name, message, rules overrides, clock step, expected unopened reasons (any of))
    ("zip nested 50 deep", attached("a.zip", nested_zip(50, [("r.pdf", PDF)])), {}, 0.0,
     {"depth"}),
    ("42.zip in small: 16 wide, 4 deep", attached("42.zip", wide_zip(16, 4)), {}, 0.0,
     {"files"}),
    ("an archive of 10,000 empty files", attached("many.zip", _many_empty_files(10_000)), {},
     0.0, {"files"}),
    ("a zip declaring a 4 GB file", attached("big.zip", declared_size_zip(0xFFFFFFF0)), {},
     0.0, {"bytes"}),
    ("deflate bomb: 40 MiB of zeros in 40 KB", attached("bomb.zip", deflate_bomb(40 << 20)),
     {}, 0.0, {"bytes"}),
    ("bombs adding up past the unpacked budget",
     attached("bombs.zip", make_zip([(f"{i}.zip", deflate_bomb(3 << 20)) for i in range(4)])),
     {"container_bytes": 8 << 20}, 0.0, {"bytes"}),
    ("attached message nested 50 deep (message/rfc822)", forwarded_chain(50, inner_message()),
     {}, 0.0, {"depth"}),
    (".eml attached inside .eml, 8 deep", attached("l.eml", eml_chain(7, inner_message())),
     {}, 0.0, {"depth"}),
    (".msg attached inside .msg, 50 deep", attached("m.msg", nested_msg(50, Msg())), {}, 0.0,
     {"depth"}),
    (".msg with a corrupt stream", attached("m.msg", _corrupt_msg_stream()), {}, 0.0,
     {"damaged"}),
    (".msg cut short", attached("m.msg", MSG_WITH_DOCX[:2000]), {}, 0.0, {"damaged"}),
    ("OLE object that is not an OLE file", attached(
        "c.docx", docx_with({"word/embeddings/oleObject1.bin": make_cfb({"x": b"1"})[:700]})),
     {}, 0.0, set()),  # an embedded file of unknown bytes: unreadable (protected), not refused
    ("PDF with 40 MiB of zeros attached in 40 KB", attached("p.pdf", pdf_with_zeros_attached(
        40 << 20)), {}, 0.0, {"bytes"}),
    ("a zip that takes longer to read than its budget",
     attached("slow.zip", make_zip([(f"{i}.txt", b"text") for i in range(50)])),
     {"container_seconds": 10.0}, 1.0, {"time"}),
]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("raw", "limits", "step", "reasons"), [c[1:] for c in HOSTILE],
                         ids=[c[0] for c in HOSTILE])
def test_hostile_containers_get_a_decision(raw: bytes, limits: dict[str, float], step: float,
                                           reasons: set[str]) -> None:
    """Never an error, never a hang: the message is protected, and what could not be opened
    within its budget is refused outside and delivered inside (fail closed)."""
    facts = classify(raw, default_rules(**limits), SteppingClock(step))
    assert facts.protected and not facts.malformed
    unopened = {a.unopened for a in facts.attachments if a.unopened}
    assert unopened <= set(containers.UNOPENED_REASONS)
    assert unopened & reasons if reasons else not unopened
    refusals, inside = outside_and_inside(facts)
    assert ("unreadable-container" in refusals) is bool(reasons)
    assert inside is Verdict.DELIVER


def test_a_lying_size_is_never_inflated_past_what_it_declares() -> None:
    """An entry declaring 1,000 bytes that would inflate to 30 MiB yields its 1,000 bytes."""
    facts = classify(attached("lie.zip", lying_bomb(1000, 30 << 20)))
    assert [(a.detected_type, a.size) for a in facts.attachments][1:] == [("unknown", 1000)]


def test_the_file_budget_counts_all_containers_of_a_message() -> None:
    """Two archives of 600 files each: the second runs out of the message's 1,000."""
    files = [(f"f{i}.txt", b"x") for i in range(600)]
    raw = build_message("Two archives", attachments=[
        ("a.zip", "application/zip", make_zip(files)),
        ("b.zip", "application/zip", make_zip(files))])
    facts = classify(raw)
    top = [a for a in facts.attachments if a.depth == 0]
    assert [(a.detected_type, a.unopened) for a in top] == [("zip", ""), ("zip", "files")]


def test_depth_budget_is_the_configured_one() -> None:
    """max_container_depth decides how deep archives are opened."""
    raw = attached("a.zip", nested_zip(3, [("r.pdf", PDF)]))
    assert not any(a.unopened for a in classify(raw, default_rules()).attachments)
    shallow = classify(raw, default_rules(max_container_depth=2))
    assert {a.unopened for a in shallow.attachments} == {"", "depth"}


def test_forwarded_messages_within_budget_are_not_malformed() -> None:
    """Four messages forwarded inside each other (FW: FW: FW: FW:) are read, not refused: the
    MIME nesting limit counts within each message."""
    raw = forwarded_chain(4, inner_message(body=f"Case {CASE}"))
    facts = classify(raw)
    assert not facts.malformed and facts.case_numbers == (CASE,)
    assert not any(a.unopened for a in facts.attachments)


@settings(max_examples=60)
@given(st.data())
def test_damaged_containers_never_raise(data: st.DataObject) -> None:
    """Random bytes overwritten anywhere in a .msg, a zip or an Office document with an
    embedded object: always facts, never an exception (fail closed)."""
    original = data.draw(st.sampled_from([
        MSG_WITH_DOCX, make_zip([("r.docx", DOCX), ("m.msg", MSG_WITH_DOCX)]),
        docx_with({"word/embeddings/oleObject1.bin": OLE_PDF})]))
    damaged = bytearray(original)
    for _ in range(data.draw(st.integers(1, 8))):
        at = data.draw(st.integers(0, len(damaged) - 1))
        damaged[at] = data.draw(st.integers(0, 255))
    facts = classify(attached("x.bin", bytes(damaged)))
    decision = decide(facts, SENDER, [PARENT, COLLEAGUE], POLICY, SNAPSHOT)
    assert facts.attachments and len(decision.recipients) == 2
    assert decision.recipients[1].action is Action.PLAIN  # inside, always delivered


def test_a_file_hidden_among_a_documents_parts_is_read() -> None:
    """A DOCX (or a zip dressed as one) carrying a file its format does not explain: the file
    is classified like an embedded object."""
    disguised = docx_with({"word/extra/report.docx": DOCX, "word/fonts/font1.odttf":
                           bytes(range(256)) * 4, "docProps/thumbnail.jpeg": PNG_HEADER})
    facts = classify(attached("cover.docx", disguised))
    assert inner(facts) == [("docx", 0), ("docx", 1)]
    assert facts.case_numbers == (CASE,)


def test_text_read_inside_containers_counts_against_the_unpacked_budget() -> None:
    """Small files of much text cannot fill memory: characters count as unpacked bytes."""
    text = (f"Case {CASE}. " * 2000).encode()  # 34 KB each, compressing to almost nothing
    raw = attached("t.zip", make_zip([(f"{i}.txt", text) for i in range(20)]))
    assert not any(a.unopened for a in classify(raw).attachments)
    tight = classify(raw, default_rules(container_bytes=400_000))
    assert "bytes" in {a.unopened for a in tight.attachments}


def test_package_object_in_a_msg_is_opened() -> None:
    """An Outlook attachment by OLE object (method 6) that carries a file gives that file."""
    msg = make_msg(ole_objects=[package_object("r.docx", DOCX)])
    facts = classify(attached("m.msg", msg))
    assert inner(facts) == [("msg", 0), ("docx", 1)]
    assert outside_and_inside(facts) == (["editable-document"], Verdict.DELIVER)


def test_attachment_model_defaults_keep_old_callers_working() -> None:
    """Facts built without the new fields mean a bare, opened attachment."""
    attachment = Attachment("application/pdf", "pdf", 10, readable=True, editable=False)
    assert (attachment.depth, attachment.unopened) == (0, "")
    assert replace(attachment, unopened="bytes").unopened in containers.UNOPENED_REASONS
