"""Which headers the classifier decodes, and that every header is still checked for a value
that decodes to a line break (CVE-2024-6923) although only the ones it reads are parsed."""

from __future__ import annotations

import random

import pytest

from policies import email_policy, header_signals
from policies.content import classify_message
from policies.header_signals import may_decode_to_line_break
from policies.model import MessageFacts
from tests.fixtures_content import SteppingClock, default_rules

RULES = default_rules()
HEAD = b"From: Jo Bloggs <jo.bloggs@cafcass.gov.uk>\r\nSubject: Update\r\nMIME-Version: 1.0\r\n"


def classify(extra: bytes) -> MessageFacts:
    raw = HEAD + extra + b"Content-Type: text/plain\r\n\r\nTeam meeting moved to 3pm.\r\n"
    return classify_message(raw, RULES, SteppingClock())


@pytest.mark.parametrize("header", [
    b"X-Note: =?utf-8?q?a=0D=0ABcc:_x@evil.example?=\r\n",  # an encoded word, unstructured
    b"Comments: =?utf-8?b?YQ0KQmNjOiB4QGV2aWwuZXhhbXBsZQ==?=\r\n",  # the same, base64
    b"Content-Disposition: inline; filename*=utf-8''a%0D%0ABcc%3A%20x%40evil.example\r\n",
    b"Content-Disposition: inline; filename*=utf-7''a+AA0ACg-Bcc: x\r\n",  # no % at all
    b"Keywords: =?utf-8?q?a=0Ab?=,\r\n =?utf-8?q?c?=\r\n",  # folded over two lines
])
def test_an_unread_header_that_decodes_to_a_line_break_is_malformed(header: bytes) -> None:
    facts = classify(header)
    assert "header-line-break" in facts.malformed and facts.protected


def test_an_address_header_with_an_encoded_line_break_is_unparseable() -> None:
    """The registry raises on it (address parts cannot hold CR or LF): fail closed."""
    facts = classify(b"To: =?utf-8?q?a=0D=0Ab?= <someone@example.org>\r\n")
    assert facts.malformed and facts.protected


def test_a_header_the_classifier_does_not_read_is_not_parsed() -> None:
    """A broken Reply-To (the stdlib's parser raises on this one) is not the classifier's
    business: it reads Subject, From and the headers its rules name, and relays the rest as
    they came. The message is judged on what it says."""
    with pytest.raises(AttributeError):
        str(email_policy.for_one_message().header_fetch_parse("Reply-To", 'a@[1.2a;b"'))
    facts = classify(b'Reply-To: a@[1.2a;b"\r\nTo: someone@example.org\r\n')
    assert (facts.protected, facts.malformed) == (False, ())


def test_the_headers_the_rules_name_are_read() -> None:
    facts = classify(b"X-Casegate-Override: personal-address; the parent asked for this\r\n"
                     b"Sensitivity: Company-Confidential\r\n")
    assert [o.rule_id for o in facts.overrides] == ["personal-address"]
    assert facts.sender_display_name == "Jo Bloggs"
    assert facts.labels == ("sensitivity:company-confidential",)


def test_a_value_without_the_three_marks_never_decodes_to_a_line_break() -> None:
    """The claim `may_decode_to_line_break` rests on, tried on random values of every kind of
    header the registry knows (seeded, so the same values each run)."""
    names = ["To", "From", "Cc", "Bcc", "Reply-To", "Sender", "Subject", "Content-Type",
             "Content-Disposition", "Content-Transfer-Encoding", "Date", "Message-ID",
             "MIME-Version", "Received", "X-Anything"]
    alphabet = [*'abcAZ09 \t\\"()<>@,;:.[]\'=?*%+-_/\r\n', "\udcc3", "é"]
    starts = ["", "attachment; filename", "text/plain; charset", '"a\\', "Jo <a@b", "(c\\"]
    chooser = random.Random(6923)
    policy = email_policy.for_one_message()
    tried = 0
    while tried < 3000:
        value = chooser.choice(starts) + "".join(
            chooser.choice(alphabet) for _ in range(chooser.randint(0, 30)))
        if may_decode_to_line_break(value):
            continue
        tried += 1
        try:
            text = str(policy.header_fetch_parse(chooser.choice(names), value))
        except Exception:  # the stdlib raising is another matter (see above)
            continue
        assert "\r" not in text and "\n" not in text, value


def test_short_values_are_remembered_and_long_ones_are_not() -> None:
    """Each sender's From comes again and again; a folded value longer than a line does not."""
    header_signals._remembered_decode.cache_clear()
    sender = "Jo Bloggs <jo.bloggs@cafcass.gov.uk>"
    assert header_signals.decoded("From", sender) == (sender, "Jo Bloggs")
    assert header_signals.decoded("From", sender) == (sender, "Jo Bloggs")
    long_list = ",\r\n ".join(f"person{i}@example.org" for i in range(60))
    text, first = header_signals.decoded("To", long_list)
    assert text.count("@") == 60 and first == ""
    info = header_signals._remembered_decode.cache_info()
    assert (info.hits, info.currsize) == (1, 1)
