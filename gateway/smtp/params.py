"""DSN parameters on MAIL and RCPT (RFC 3461): taken off the command line and syntax-checked.

aiosmtpd knows SIZE, BODY and SMTPUTF8 only (it answers 555 to any other parameter, and
upper-cases the rest, which would change ENVID and ORCPT values). So the SMTP front takes the
DSN parameters off the line first (`take_dsn`) and hands aiosmtpd the rest:

    MAIL FROM:<jo@example.org> RET=HDRS ENVID=QQ314159     RET: FULL or HDRS; ENVID: xtext
    RCPT TO:<al@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;al@example.org

A value that breaks the RFC's syntax, or a parameter given twice, is refused with a
`501 5.5.4` naming it. Only whole words after the path's closing ">" are read, so nothing inside
a path can be taken for a parameter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAIL_KEYWORDS = frozenset({"RET", "ENVID"})
RCPT_KEYWORDS = frozenset({"NOTIFY", "ORCPT"})

# xtext (RFC 3461 4): printable ASCII except "+" and "=", or "+" and two upper-case hex digits.
_XTEXT = r"(?:[!-*,-<>-~]|\+[0-9A-F]{2})"
_ENVID = re.compile(rf"{_XTEXT}{{1,100}}")  # at most 100 characters (RFC 3461 4.4)
_ORCPT = re.compile(rf"[A-Za-z0-9-]+;{_XTEXT}+")  # addr-type ";" xtext (4.2), <= 500 (4.2)
_NOTIFY_VALUES = frozenset({"SUCCESS", "FAILURE", "DELAY"})


@dataclass(frozen=True)
class Taken:
    """The command argument without its DSN parameters, and those parameters (keyword upper-
    case, value as written), or the 501 reply when one is not well formed."""

    arg: str
    params: dict[str, str]
    error: str = ""


def take_dsn(arg: str, keywords: frozenset[str]) -> Taken:
    """Take the parameters named in `keywords` off a MAIL or RCPT argument and check them."""
    words = list(re.finditer(r"\S+", arg))
    path_end = next((i for i, w in enumerate(words) if w.group().endswith(">")), None)
    if path_end is None:
        return Taken(arg, {})  # no angle path: aiosmtpd reads (and refuses) it as it is
    params: dict[str, str] = {}
    kept: list[str] = []
    for word in words[path_end + 1:]:
        name, eq, value = word.group().partition("=")
        keyword = name.upper()
        if keyword not in keywords:
            kept.append(word.group())
            continue
        if keyword in params:
            return Taken(arg, {}, f"501 5.5.4 The {keyword} parameter was given twice.")
        if not eq or not _valid(keyword, value):
            return Taken(arg, {}, f"501 5.5.4 The {keyword} parameter is not valid "
                                  "(RFC 3461).")
        params[keyword] = value.upper() if keyword in ("RET", "NOTIFY") else value
    if not params:
        return Taken(arg, {})
    rest = " ".join(kept)
    return Taken(arg[: words[path_end].end()] + (" " + rest if rest else ""), params)


def _valid(keyword: str, value: str) -> bool:
    if keyword == "RET":
        return value.upper() in ("FULL", "HDRS")
    if keyword == "ENVID":
        return _ENVID.fullmatch(value) is not None
    if keyword == "ORCPT":
        return len(value) <= 500 and _ORCPT.fullmatch(value) is not None
    notify = value.upper().split(",")  # NOTIFY: NEVER alone, or some of the three, once each
    if notify == ["NEVER"]:
        return True
    return len(set(notify)) == len(notify) and set(notify) <= _NOTIFY_VALUES
