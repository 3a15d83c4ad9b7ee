"""Reply texts that survive an MTA's bounce formatting: one whole sentence to a line, every line
within RFC 5321's 512 octets, split at a clause only when a sentence is longer than that."""

from __future__ import annotations

from importlib import resources

import pytest

from gateway.smtp.front import with_enhanced_codes
from gateway.stages.message import Reply
from policies.loader import EMBEDDED_FILES, parse_policy


def test_each_sentence_is_one_line() -> None:
    """Two sentences in one text become two lines; neither is cut in the middle."""
    reply = Reply.of(550, "5.7.1", "This address is not valid. Check it (e.g. use Reply) and "
                     "send again.", "al@example.org: Use s. 2 forms.")
    assert reply.lines == ("This address is not valid.",
                           "Check it (e.g. use Reply) and send again.",
                           "al@example.org: Use s. 2 forms.")
    assert reply.render().split("\r\n")[0] == "550-5.7.1 This address is not valid."


def test_a_reason_for_one_recipient_stays_on_one_line() -> None:
    """Refusing several recipients reads one line per recipient, each with its sentences."""
    reply = Reply.of(550, "5.7.1", "jo@gmail.com: Not allowed. Use your Cafcass account.",
                     "al@cjsm.com: Looks like a secure address. Check it.")
    assert reply.lines == ("jo@gmail.com: Not allowed. Use your Cafcass account.",
                           "al@cjsm.com: Looks like a secure address. Check it.")


def test_a_sentence_too_long_for_a_line_is_cut_at_a_clause() -> None:
    """A sentence over the line limit is cut after a comma, and every line fits 512 octets."""
    clause = "word " * 40  # three clauses of 199 characters: two fit on a line
    reply = Reply.of(550, "5.7.1", f"{clause.strip()}, {clause.strip()}, {clause.strip()}.")
    assert len(reply.lines) == 2
    assert reply.lines[0].endswith(",")
    assert all(len(line) + 2 <= 512 for line in reply.render().split("\r\n"))


def test_a_sentence_without_clauses_is_cut_at_a_space_as_a_last_resort() -> None:
    """No clause boundary: cut at a space, never inside a word, within 512 octets."""
    reply = Reply.of(451, "4.3.0", "word " * 300)
    assert all(len(line) + 2 <= 512 for line in reply.render().split("\r\n"))
    assert all(set(line.split()) == {"word"} for line in reply.lines)


def test_every_policy_sentence_renders_as_whole_sentences() -> None:
    """Each rule's sentence renders with every line a complete sentence within 512 octets."""
    data = resources.files("policies").joinpath("data")
    policy = parse_policy([(name, data.joinpath(name).read_text("utf-8"))
                           for name in EMBEDDED_FILES])
    for rule in policy.rules.values():
        rendered = Reply.of(550, "5.7.1", rule.sentence).render().split("\r\n")
        for line in rendered:
            assert len(line) + 2 <= 512
            assert line.rstrip().endswith((".", "?", "!", ")")), (rule.id, line)


@pytest.mark.parametrize(("aiosmtpd", "ours"), [
    ("221 Bye", "221 2.0.0 Bye"),
    ("220 Ready to start TLS", "220 2.0.0 Ready to start TLS"),
    ("250 OK", "250 2.0.0 OK"),
    ("500 Error: bad syntax", "500 5.5.2 Error: bad syntax"),
    ("503 Error: need MAIL command", "503 5.5.1 Error: need MAIL command"),
    ("555 MAIL FROM parameters not recognized or not implemented",
     "555 5.5.4 MAIL FROM parameters not recognized or not implemented"),
    ("250-first\r\n250 second", "250-2.0.0 first\r\n250 2.0.0 second"),
    ("250 2.1.0 Sender OK", "250 2.1.0 Sender OK"),
    ("354 End data with <CR><LF>.<CR><LF>", "354 End data with <CR><LF>.<CR><LF>"),
])
def test_aiosmtpds_replies_get_an_enhanced_code(aiosmtpd: str, ours: str) -> None:
    """aiosmtpd's replies without an enhanced status code get one (RFC 3463); 3xx do not."""
    assert with_enhanced_codes(aiosmtpd) == ours
