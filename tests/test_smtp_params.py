"""DSN parameters (RFC 3461) taken off MAIL and RCPT lines and checked, from a table."""

from __future__ import annotations

import pytest

from gateway.smtp.params import MAIL_KEYWORDS, RCPT_KEYWORDS, take_dsn

ROWS = [
    # (argument, keywords, argument left for aiosmtpd, parameters taken)
    ("FROM:<a@b.example> RET=hdrs ENVID=Ab+2B1", MAIL_KEYWORDS, "FROM:<a@b.example>",
     {"RET": "HDRS", "ENVID": "Ab+2B1"}),
    ("FROM:<a@b.example> SIZE=10 RET=FULL BODY=8BITMIME", MAIL_KEYWORDS,
     "FROM:<a@b.example> SIZE=10 BODY=8BITMIME", {"RET": "FULL"}),
    ("FROM: <> ENVID=x", MAIL_KEYWORDS, "FROM: <>", {"ENVID": "x"}),
    ("TO:<c@d.example> NOTIFY=success,delay ORCPT=rfc822;C@d.example", RCPT_KEYWORDS,
     "TO:<c@d.example>", {"NOTIFY": "SUCCESS,DELAY", "ORCPT": "rfc822;C@d.example"}),
    ("TO:<c@d.example> NOTIFY=NEVER", RCPT_KEYWORDS, "TO:<c@d.example>", {"NOTIFY": "NEVER"}),
    # Not ours to take: RCPT keywords on MAIL, no angle path, a parameter inside the path.
    ("FROM:<a@b.example> NOTIFY=NEVER", MAIL_KEYWORDS, "FROM:<a@b.example> NOTIFY=NEVER", {}),
    ("FROM:a@b.example RET=FULL", MAIL_KEYWORDS, "FROM:a@b.example RET=FULL", {}),
    ('FROM:<"a RET=FULL"@b.example>', MAIL_KEYWORDS, 'FROM:<"a RET=FULL"@b.example>', {}),
]


@pytest.mark.parametrize(("arg", "keywords", "left", "taken"), ROWS)
def test_dsn_parameters_are_taken_off_the_line(arg: str, keywords: frozenset[str], left: str,
                                               taken: dict[str, str]) -> None:
    """Only whole DSN words after the path are taken; values keep their case (ENVID, ORCPT)."""
    result = take_dsn(arg, keywords)
    assert (result.arg, result.params, result.error) == (left, taken, "")


@pytest.mark.parametrize(("arg", "keywords"), [
    ("FROM:<a@b.example> RET=ALL", MAIL_KEYWORDS),
    ("FROM:<a@b.example> RET", MAIL_KEYWORDS),
    ("FROM:<a@b.example> ENVID=", MAIL_KEYWORDS),
    ("FROM:<a@b.example> ENVID=" + "x" * 101, MAIL_KEYWORDS),
    ("FROM:<a@b.example> ENVID=a+zz", MAIL_KEYWORDS),
    ("FROM:<a@b.example> RET=FULL ret=HDRS", MAIL_KEYWORDS),
    ("TO:<c@d.example> NOTIFY=NEVER,FAILURE", RCPT_KEYWORDS),
    ("TO:<c@d.example> NOTIFY=SUCCESS,SUCCESS", RCPT_KEYWORDS),
    ("TO:<c@d.example> NOTIFY=", RCPT_KEYWORDS),
    ("TO:<c@d.example> ORCPT=c@d.example", RCPT_KEYWORDS),
    ("TO:<c@d.example> ORCPT=rfc822;", RCPT_KEYWORDS),
    ("TO:<c@d.example> ORCPT=rfc822;a=b", RCPT_KEYWORDS),
])
def test_malformed_dsn_parameters_are_a_501(arg: str, keywords: frozenset[str]) -> None:
    """A value outside RFC 3461's syntax, or a keyword given twice, is 501 5.5.4."""
    assert take_dsn(arg, keywords).error.startswith("501 5.5.4 The ")
