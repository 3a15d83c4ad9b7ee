"""MAIL and RCPT paths: the plain-form fast path answers exactly as the full parser does."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.smtp.front import GatewaySMTP, SubmissionHandler, plain_path
from tests.gateway_harness import running_gateway

ATEXT = "abcxyzABZ0189!#$%&'*+/=?^_`{|}~-"
LABEL = st.text("abz09-", min_size=1, max_size=8)
LOCAL = st.lists(st.text(ATEXT, min_size=1, max_size=8), min_size=1, max_size=3).map(".".join)
DOMAIN = st.lists(LABEL, min_size=1, max_size=4).map(".".join)
PARAMS = st.sampled_from(["", " SIZE=1000", "  BODY=8BITMIME SIZE=5", "\tSIZE=1", "SIZE=1",
                          " (comment) SIZE=1", " \u00a0SIZE=1", "\u00a0 SIZE=1", " \x0bX"])
PLAIN = st.builds(lambda local, domain, params: f"<{local}@{domain}>{params}",
                  LOCAL, DOMAIN, PARAMS)

# Pieces of hostile paths: routes, comments, quotes, literals, IDN and confusables, odd space.
PIECES = ["<", ">", "<>", "@", ".", "..", "(", ")", "(x)", '"', '"a b"', " ", "\t", "\u00a0",
          "\x0b", ",", ":", ";", "\\", "[", "]", "[127.0.0.1]", "@a.example:", "@a,@b:", "jo",
          "jo.smith", "b.example", "nhs.net", "%", "!", "-", "SIZE=10", "xn--bcher-kva",
          "b\u00fccher", "\u0430pple", "\u0131", "\u00e9", "=?utf-8?q?x?=", "a" * 70]
HOSTILE = st.lists(st.sampled_from(PIECES) | st.text(max_size=2), max_size=10).map("".join)

EXAMPLES = [
    "<jo.smith@cafcass.gov.uk>",
    "<jo.smith@cafcass.gov.uk> SIZE=2048 BODY=8BITMIME",
    "jo.smith@cafcass.gov.uk",  # no angle brackets
    "<>",
    "<@relay.example:jo@b.example>",  # source route
    "<jo(@nhs.net)@b.example>",  # comment
    "<jo@b.example> (comment) SIZE=1",
    '<"jo smith"@b.example>',  # quoted local part
    "<jo@[127.0.0.1]>",  # address literal
    "<jo@b\u00fccher.example>",  # IDN
    "<j\u00f6@b.example>",
    "< jo@b.example>",
    "<jo@b.example",  # no closing bracket
    "<jo@b.example>>",
    "<jo..smith@b.example>",
    "<.jo@b.example>",
    "<jo@b.example.>",
    "<jo%x@b.example>",
    "<jo@b.example>\u00a0SIZE=1",
    "<jo@b_c.example>",
    "<",
    "",
]


@pytest.fixture
async def session(tmp_path: Path) -> GatewaySMTP:
    """One SMTP connection object of a real running gateway (never connected)."""
    async with running_gateway(tmp_path, None) as gw:
        handler = SubmissionHandler(gw.gateway.stages, gw.gateway.handler.throttle, (), 100)
        return GatewaySMTP(handler, implicit_tls=False)


def outcome(read: Callable[[str], object], arg: str) -> object:
    """What reading `arg` gives: the answer, or the type of the exception raised."""
    try:
        return read(arg)
    except Exception as exc:  # the stdlib parser raises IndexError for "<", say
        return type(exc)


def agree(session: GatewaySMTP, arg: str) -> None:
    """The path as read now and as the full parser alone reads it, at two local-part limits."""
    for limit in (0, 8):
        session.local_part_limit = limit
        assert outcome(session._getaddr, arg) == outcome(session._parsed_path, arg), (arg, limit)


def test_examples_agree(session: GatewaySMTP) -> None:
    """Each written form, plain or disguised, gets the full parser's answer."""
    for arg in EXAMPLES:
        agree(session, arg)


def test_plain_form_takes_the_fast_path(session: GatewaySMTP) -> None:
    """The plain form is read by the fast path; disguised forms are refused by the full one."""
    assert plain_path("<jo@b.example> SIZE=1", 0) == ("jo@b.example", "SIZE=1")
    assert plain_path("<@a.example:jo@b.example>", 0) is None
    assert session._getaddr("<@a.example:jo@b.example>") == (None, None)
    assert session._getaddr("<jo(@nhs.net)@b.example>") == (None, None)


FIXTURE_ONCE = [HealthCheck.function_scoped_fixture]  # `agree` sets all it relies on


@settings(max_examples=1500, deadline=None, suppress_health_check=FIXTURE_ONCE)
@given(arg=PLAIN)
def test_generated_plain_paths_agree(session: GatewaySMTP, arg: str) -> None:
    """Generated plain paths, with and without ESMTP parameters, agree with the full parser,
    and those without a comment after them take the fast path."""
    agree(session, arg)
    if "(" not in arg:
        assert plain_path(arg, 0) is not None


@settings(max_examples=2500, deadline=None, suppress_health_check=FIXTURE_ONCE)
@given(arg=HOSTILE | PLAIN.map(lambda p: p.replace("@", "@@", 1)) | st.text(max_size=40))
def test_hostile_paths_agree(session: GatewaySMTP, arg: str) -> None:
    """Routes, comments, quotes, literals, IDN, odd white space, `<>` and missing brackets:
    the same answer as the full parser, whatever the input."""
    agree(session, arg)
