"""policies/restricted.py: agency check results and legal advice recognised by what they are.

Table-driven: texts and their signals, authors cut out of bodies, headings, the weighing of
signals against the organisation's lists, and the policy keys that configure it.
"""

from __future__ import annotations

import re
import time
from email.message import EmailMessage
from importlib import resources
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies import restricted
from policies.content import classify_message
from policies.errors import PolicyError
from policies.loader import EMBEDDED_FILES, Policy, parse_policy
from policies.model import MessageFacts, TextSignal
from policies.restricted import (
    CHECK_DOCUMENT,
    CHECK_PRESENTED,
    CHECK_REPORT,
    LEGAL_MARKING,
    OWN,
    UNKNOWN,
    Unit,
)
from tests.fixtures_content import default_rules

RULES = default_rules()
SENDER = "jo.bloggs@cafcass.gov.uk"
ORG = """
[domains]
instructed_lawyers = ["guardian-law.co.uk"]
check_agencies = { extend = ["camden.gov.uk"] }
[legal]
team_addresses = ["Legal.Advice@cafcass.gov.uk"]
"""


def policy(*extra: str) -> Policy:
    data = resources.files("policies").joinpath("data")
    documents = [(name, data.joinpath(name).read_text("utf-8")) for name in EMBEDDED_FILES]
    return parse_policy(documents + [(f"org{i}.toml", text) for i, text in enumerate(extra)])


POLICY = policy(ORG)


def kinds(source: str, text: str, author: str = OWN) -> set[tuple[str, str]]:
    found = restricted.scan([Unit(source, text, author)], RULES.agency_checks, RULES.legal_advice)
    return {(s.kind, s.author) for s in found.signals}


POLICE = "pc.smith@kent.pnn.police.uk"
PNC_PRINT = """POLICE NATIONAL COMPUTER
PNC ID: 12/345678A
Surname: SMITH
Offence: Common assault
Date of conviction: 12/03/2019
Disposal: Fine
"""
BLANK_FORM = """CAFCASS SAFEGUARDING CHECK REQUEST
Date of request: 01/01/2026
Surname: SMITH
Trace: Yes / No
Information held:
Result: ________
Checked by:
Date checked:
"""


@pytest.mark.parametrize(("source", "text", "author", "expected"), [
    # Originals: origin marks, record fields filled in, outcomes.
    ("attachment-text", PNC_PRINT, OWN, {(CHECK_DOCUMENT, OWN)}),
    ("attachment-text", "Kent Police\nDisclosure Unit\nResult: No trace\nJ Bloggs", OWN,
     {(CHECK_DOCUMENT, OWN)}),
    ("attachment-text", "LOCAL AUTHORITY CHECKS RESPONSE\nSystems checked: Mosaic\n"
     "Involvement: child in need plan 2021", OWN, {(CHECK_DOCUMENT, OWN)}),
    ("attachment-name", "PNC_print_father.pdf", OWN, {(CHECK_DOCUMENT, OWN)}),
    ("attachment-name", "police_check_request_form.pdf", OWN, set()),
    # A blank request form asks; it does not answer.
    ("attachment-text", BLANK_FORM, OWN, set()),
    # Talk about checks, and Cafcass's own summaries, are not results.
    ("body", "We have requested police checks and they are outstanding.", OWN, set()),
    ("body", "The police told us Mr X has a conviction for theft; the family is not known to "
     "children's social care. This letter must not be shared without the consent of the "
     "court.", OWN, set()),
    ("body", "Please find attached my safeguarding letter, which summarises the police checks.",
     OWN, set()),
    ("body", "Please find attached the form to request police checks.", OWN, set()),
    # Handed over in the sender's own words.
    ("body", "Please find the police check results below.", OWN, {(CHECK_PRESENTED, OWN)}),
    ("body", "I attach the LA checks response for Ms Jones.", OWN, {(CHECK_PRESENTED, OWN)}),
    # A text written by someone else reports an outcome: a result if they are an agency.
    ("body", "FYI\n\nFrom: PC Smith <pc.smith@kent.pnn.police.uk>\nSent: 5 January 2026\n"
     "Subject: Checks\n\nNo trace on PNC for either party.", OWN, {(CHECK_REPORT, POLICE)}),
    ("body", f"On Mon, 5 Jan 2026, PC Smith <{POLICE}> wrote:\n> Father: two domestic "
     "incidents, NFA.", OWN, {(CHECK_REPORT, POLICE)}),
    ("body", "Checks done: nothing known on either party.", POLICE, {(CHECK_REPORT, POLICE)}),
    ("body", "Thank you for your request; it will be completed within 20 working days.",
     POLICE, set()),
    # Legal advice: a marking in a subject or a heading, not a topic, not a footer.
    ("subject", "Legal advice: contact in ZC12C00123", OWN, {(LEGAL_MARKING, OWN)}),
    ("subject", "Getting independent legal advice", OWN, set()),
    ("body", "LEGALLY PRIVILEGED AND CONFIDENTIAL\n\nDear Jo,\nMy view is ...", OWN,
     {(LEGAL_MARKING, OWN)}),
    ("body", "Dear Ms X,\nYou may wish to seek legal advice before the hearing.", OWN, set()),
    ("body", "See you Monday.\nJo\n--\nThis email and any attachments are confidential and "
     "may be legally privileged. If you have received it in error, tell us.", OWN, set()),
])
def test_signals_of_one_text(source: str, text: str, author: str,
                             expected: set[tuple[str, str]]) -> None:
    """Each text gives exactly the signals listed, with the author of the text."""
    assert kinds(source, text, author) == expected


@pytest.mark.parametrize(("body", "expected"), [
    ("Hello\n\nFrom: A <a@x.org>\nSent: today\nTo: me\nSubject: S\n\nbody",
     [(OWN, "", "Hello"), ("a@x.org", "S", "body")]),
    ("Hi\n---------- Forwarded message ---------\nFrom: B <b@y.org>\nDate: Mon\nSubject: T\n"
     "To: <me@z.org>\n\ntext", [(OWN, "", "Hi\n---------- Forwarded message ---------"),
                                ("b@y.org", "T", "text")]),
    ("Thanks\nOn Tue, 6 Jan 2026 at 09:00, C <c@w.org> wrote:\n> quoted",
     [(OWN, "", "Thanks"), ("c@w.org", "", "> quoted")]),
    ("Top\nFrom: Smith, Jo\nSent: 5 January\nTo: Team\nSubject: Note\n\ninside",
     [(OWN, "", "Top"), (UNKNOWN, "Note", "inside")]),
    ("From: the start of a sentence, not a header\nplain text", [
        (OWN, "", "From: the start of a sentence, not a header\nplain text")]),
    # a header block as long as it may be: eight lines after "From:"
    ("Top\nFrom: A <a@x.org>\nSent: 1\nTo: 2\nCc: 3\nDate: 4\nTo: 5\nCc: 6\nSent: 7\n"
     "Subject: S\ninside\nmore", [(OWN, "", "Top"), ("a@x.org", "S", "inside\nmore")]),
])
def test_segments_cut_out_forwards_and_quotes(body: str,
                                              expected: list[tuple[str, str, str]]) -> None:
    """Inline forwards and quoted replies become segments with their author and subject."""
    assert [(s.author, s.subject, s.text.strip()) for s in restricted.segments(body)] == expected


SEGMENT_LINES = ["From: A <a@x.org>", "Sent: today", "To: me", "Subject: S", "Date: Mon",
                 "On Tue, C <c@w.org> wrote:", "> quoted", ">> From: B <b@y.org>", "plain",
                 "wrote", "from", "", " ", "Cc: you", "> Subject: T", "x" * 1000,
                 "From: A <a@x.org> " + "x" * 982, "From: A <a@x.org> " + "x" * 981,
                 "From: Zo\u00eb <z@x.org>", "On Tue, Zo\u00eb \u2013 <z@x.org> wrote:",
                 "\u0130stanbul", "FROM: B <b@y.org>"]


@given(st.lists(st.sampled_from(SEGMENT_LINES), max_size=40),
       st.sampled_from(["", "\n", "\n\n"]), st.sampled_from([1, 7, 1 << 16]))
def test_segments_are_stretches_of_the_body_as_its_lines_cut(lines: list[str], end: str,
                                                             lower_slice: int) -> None:
    """`segments` reads each piece where it lies in the body (a long quoted reply is not
    copied): the same pieces, authors and subjects as cutting the body's lines and joining
    them again (`_segments_by_line`, the walk it replaced), forwards' header blocks near the
    text's end, lines of 1,000 characters (never a header), and text with other than ASCII
    (lower-cased a slice of lines at a time) included. (A body with no
    forward or quote is one piece, the body itself: its last line breaks are not cut off.)"""
    body = "\n".join(lines) + end
    with mock.patch.object(restricted, "_LOWER_SLICE", lower_slice):  # non-ASCII: by slices
        found = restricted.segments(body, "me@cafcass.gov.uk")
    assert [(s.author, s.subject, s.text.rstrip("\n")) for s in found] == [
        (s.author, s.subject, s.text.rstrip("\n"))
        for s in restricted._segments_by_line(body, "me@cafcass.gov.uk")]
    if restricted._candidate_lines(body) is not restricted._EVERY_LINE:  # ("İ": line by line)
        assert all(s.body is body for s in found)  # stretches, not copies


def facts(*signals: TextSignal, information_type: str = "general",
          forwarded_from: tuple[str, ...] = ()) -> MessageFacts:
    return MessageFacts(
        information_type=information_type, protected=False, protected_reasons=(),
        case_numbers=(), identifiers=(), attachments=(), labels=(), auto_forwarded=False,
        overrides=(), sender_display_name="Jo", size=100, signals=signals,
        forwarded_from=forwarded_from)


@pytest.mark.parametrize(("given", "sender", "expected"), [
    (facts(TextSignal(CHECK_REPORT, POLICE)), SENDER, "agency-check-result"),
    (facts(TextSignal(CHECK_REPORT, "duty@camden.gov.uk")), SENDER, "agency-check-result"),
    (facts(TextSignal(CHECK_REPORT, "clerk@justice.gov.uk")), SENDER, "general"),
    (facts(TextSignal(CHECK_REPORT, "a.solicitor@guardian-law.co.uk")), SENDER, "general"),
    (facts(TextSignal(CHECK_REPORT, "fca@cafcass.gov.uk")), SENDER, "general"),
    (facts(TextSignal(CHECK_DOCUMENT, "anyone@example.org")), SENDER, "agency-check-result"),
    (facts(), "legal.advice@cafcass.gov.uk", "legal-advice"),
    (facts(forwarded_from=("legal.advice@cafcass.gov.uk",)), SENDER, "legal-advice"),
    (facts(TextSignal(LEGAL_MARKING, "k.osei@osei-law.co.uk")), SENDER, "general"),
    (facts(TextSignal(LEGAL_MARKING, "counsel@guardian-law.co.uk")), SENDER, "legal-advice"),
    (facts(TextSignal(LEGAL_MARKING, "fca@cafcass.gov.uk")), SENDER, "legal-advice"),
    (facts(TextSignal(LEGAL_MARKING, UNKNOWN)), SENDER, "legal-advice"),
    # The stricter type wins: a check result may not go even to instructed lawyers.
    (facts(TextSignal(CHECK_REPORT, POLICE), information_type="legal-advice"), SENDER,
     "agency-check-result"),
])
def test_refine_weighs_authors_against_the_lists(given: MessageFacts, sender: str,
                                                 expected: str) -> None:
    """The engine's step: who wrote the text decides what a signal means."""
    refined = restricted.refine(given, sender, POLICY.restricted)
    assert refined.information_type == expected
    assert refined.protected is (expected != "general")


@pytest.mark.parametrize(("extra", "key"), [
    ("[legal]\nteam_addresses = ['not an address']\n", "legal.team_addresses"),
    ("[legal]\nmailbox = 'x'\n", "legal.mailbox"),
    ("[domains]\ninstructed_lawyers = ['bad domain']\n", "domains.instructed_lawyers"),
    ("[content.agency_checks]\noutcomes = 'no trace'\n", "content.agency_checks.outcomes"),
    ("[content.agency_checks]\nsignals = []\n", "content.agency_checks.signals"),
    ("[content.legal_advice]\nheading_lines = 0\n", "content.legal_advice.heading_lines"),
])
def test_bad_keys_name_the_file_and_the_key(extra: str, key: str) -> None:
    """Each new key is validated; an error names the organisation file and the dotted key."""
    with pytest.raises(PolicyError) as raised:
        policy(extra)
    assert "org0.toml" in str(raised.value) and key in str(raised.value)


def test_organisation_files_extend_and_override_the_lists() -> None:
    """Lists merge like every other: `extend` adds, a later file replaces."""
    assert POLICY.restricted.instructed_lawyers == ("guardian-law.co.uk",)
    assert "camden.gov.uk" in POLICY.restricted.check_agencies
    assert "pnn.police.uk" in POLICY.restricted.check_agencies
    assert POLICY.restricted.legal_team == ("legal.advice@cafcass.gov.uk",)
    later = policy(ORG, "[domains]\ninstructed_lawyers = ['counsel.cjsm.net']\n")
    assert later.restricted.instructed_lawyers == ("counsel.cjsm.net",)
    changed = policy("[content.legal_advice]\nmarkings = ['attorney client privilege']\n")
    assert changed.content.legal_advice.markings == ("attorney client privilege",)
    assert changed.content.legal_advice.heading_lines == 3


def test_defaults_list_no_instructed_lawyers_and_no_legal_team() -> None:
    """Nothing leaves as legal advice until the organisation names its lawyers."""
    defaults = policy()
    assert defaults.restricted.instructed_lawyers == ()
    assert defaults.restricted.legal_team == ()
    assert set(defaults.restricted.check_agencies) == {
        "police.uk", "pnn.police.uk", "nhs.net", "nhs.uk", "gcsx.gov.uk"}


def _nested(depth: int) -> bytes:
    """The sender's message carrying a police reply inside `depth` attached messages."""
    inner = EmailMessage()
    inner["From"] = POLICE
    inner["Subject"] = "Checks"
    inner.set_content("No trace on PNC for either party.")
    for level in range(depth):
        outer = EmailMessage()
        outer["From"] = SENDER if level == depth - 1 else f"level{level}@example.org"
        outer["Subject"] = f"FW: {level}"
        outer.set_content("see attached")
        outer.add_attachment(inner)
        inner = outer
    return bytes(inner)


@pytest.mark.parametrize("depth", [1, 3, 50])
def test_attached_messages_carry_their_author_within_the_limits(depth: int) -> None:
    """A police reply inside an attached message is the police's; 50 levels deep is beyond
    the nesting limits (protected, unread) and never a crash."""
    found = classify_message(_nested(depth), RULES, time.monotonic)
    if depth <= 3:
        assert TextSignal(CHECK_REPORT, POLICE) in found.signals
        assert POLICE in found.forwarded_from
        refined = restricted.refine(found, SENDER, POLICY.restricted)
        assert refined.information_type == "agency-check-result"
    else:  # beyond the limits: not read (an unopened container), protected, never a crash
        assert found.protected
        assert TextSignal(CHECK_REPORT, POLICE) not in found.signals


def test_reply_subject_belongs_to_the_quoted_author() -> None:
    """"RE: Legal advice" to a parent who asked about legal advice is the parent's subject."""
    body = ("Dear Ms X,\nThe Law Society lists solicitors near you.\n\nFrom: Mum "
            "<mum@gmail.com>\nSent: 5 January 2026\nTo: Jo\nSubject: Legal advice\n\nHelp?")
    found = restricted.scan([Unit("subject", "RE: Legal advice"), Unit("body", body)],
                            RULES.agency_checks, RULES.legal_advice)
    assert {(s.kind, s.author) for s in found.signals} == {(LEGAL_MARKING, "mum@gmail.com")}
    alone = restricted.scan([Unit("subject", "RE: Legal advice")], RULES.agency_checks,
                            RULES.legal_advice)
    assert [s.author for s in alone.signals] == [OWN]


def test_a_long_text_is_scanned_in_linear_time() -> None:
    """A megabyte of cue words is read in well under a second (no backtracking)."""
    text = ("Result: no trace\nOffence: theft\n" + "police national computer " * 20) * 2000
    start = time.perf_counter()
    assert (CHECK_DOCUMENT, OWN) in kinds("attachment-text", text)
    assert time.perf_counter() - start < 2.0


def test_an_eml_file_attached_carries_its_author() -> None:
    """A police reply saved as .eml and attached as a file is read as the police's text, as a
    message/rfc822 part is (containers are opened: DESIGN ruling 22)."""
    reply = EmailMessage()
    reply["From"] = f"PC Smith <{POLICE}>"
    reply["Subject"] = "RE: Safeguarding check request"
    reply.set_content("Mother: no trace. Father: two domestic incidents recorded, both NFA.")
    outer = EmailMessage()
    outer["From"] = SENDER
    outer["To"] = "j.harris@smithlaw.co.uk"
    outer["Subject"] = "Checks"
    outer.set_content("Please see attached.")
    outer.add_attachment(bytes(reply), maintype="application", subtype="octet-stream",
                         filename="reply.eml")
    found = classify_message(bytes(outer), RULES, time.monotonic)
    assert TextSignal(CHECK_REPORT, POLICE) in found.signals
    assert restricted.refine(found, SENDER, POLICY.restricted).information_type == \
        "agency-check-result"


@given(st.lists(st.sampled_from(["Offence: theft", "Result: No trace", "> Disposal: none",
                                 "a: b", "Date checked:", "plain words", "", ":", "x Offence: y",
                                 "Name: A"]), max_size=40))
def test_record_fields_found_from_colons_are_the_pattern_s_own(lines: list[str]) -> None:
    """restricted._sub_fields tries the field pattern only on lines with a colon: the same
    result as the pattern's own sub over the whole text; given the text as a stretch of a
    longer one (a segment of a body), or as one stretch a line, the same again."""
    fields = default_rules().agency_checks._fields
    text = "\n".join(lines)

    def value(match: re.Match[str]) -> str:
        return match.group(2)

    expected = fields.sub(value, text, count=200)
    body = f"Offence: before\n{text}\nResult: after"
    start = len("Offence: before\n")
    assert joined(restricted._sub_fields(fields, value, [(body, start, start + len(text))])) \
        == expected
    by_line, at = [], start
    for line in lines:
        by_line.append((body, at, at + len(line) + 1))
        at += len(line) + 1
    by_line[-1:] = [(body, by_line[-1][1], by_line[-1][2] - 1)] if by_line else []
    assert joined(restricted._sub_fields(fields, value, by_line)) == expected


def joined(spans: list[restricted.Span]) -> str:
    return "".join(text[start:end] for text, start, end in spans)
