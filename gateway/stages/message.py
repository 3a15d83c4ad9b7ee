"""The values one message is made of as it goes through the stages: what the SMTP front
received (`Submission`) and what the client is answered (`Reply`)."""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from gateway.stages.copies import RawMessage, Trace, field_name
from gateway.stores.users import User
from transports.base import NO_DSN, Dsn

if TYPE_CHECKING:
    from gateway.stages.context import TransactionSnapshot

# RFC 5321 4.5.3.1.5: a reply line is at most 512 octets with its CRLF; the code, the
# separator, the enhanced status code (at most "5.999.999") and a space take up to 14.
REPLY_TEXT_LIMIT = 512 - 2 - 14
MAX_REPLY_LINES = 20
# Where a sentence ends: ".", "!" or "?" (maybe closing a quote or bracket), a space, and a
# capital, a digit, a quote or a bracket starting the next (so "e.g. a" and "s. 2" do not).
_SENTENCE_END = re.compile(r"(?<=[.!?])(?<!\be\.g\.)(?<!\bi\.e\.)([\"')\]]?) +(?=[A-Z\"'(\[])")
_CLAUSE_END = re.compile(r"(?<=[,;:]) +")
_FOR_RECIPIENT = re.compile(r"[^\s@:]+@[^\s@:]+: ")

_TYPOGRAPHY = str.maketrans({"‘": "'", "’": "'", "“": '"', "”": '"', "–": "-", "—": "-",
                             "…": "..."})


def _ascii(text: str) -> str:
    """Reply text as plain printable ASCII on one line."""
    if text.isascii() and text.isprintable():  # already so (most replies): nothing to fold
        return text.strip()
    return _fold_to_ascii(text)


def _fold_to_ascii(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text.translate(_TYPOGRAPHY))
    return "".join(ch if " " <= ch <= "~" else " " for ch in folded.encode("ascii", "ignore")
                   .decode("ascii")).strip()


@dataclass(frozen=True)
class Reply:
    """An SMTP reply: the code, the enhanced status code and one or more lines of text."""

    code: int
    status: str
    lines: tuple[str, ...]
    # Whether the stage that made this reply recorded its audit event: the SMTP front then does
    # not record the reply a second time as a protocol refusal (SECURITY.md item 14).
    audited: bool = field(default=False, compare=False)

    @classmethod
    def of(cls, code: int, status: str, *texts: str) -> Reply:
        """A reply whose texts are made ASCII, one sentence to a line.

        An MTA's bounce often runs a multi-line reply together, so each line is a whole
        sentence, never wrapped in the middle; a sentence longer than a reply line may be
        (RFC 5321: 512 octets) is split at a clause boundary, and only as a last resort at a
        space.
        """
        lines: list[str] = []
        for text in texts:
            lines.extend(_sentences(_ascii(text)) or [""])
        return cls(code, status, tuple(lines[:MAX_REPLY_LINES]))

    def recorded(self, audited: bool = True) -> Reply:
        """This reply, marked as audited by the stage that made it (when `audited`)."""
        return replace(self, audited=audited) if audited != self.audited else self

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300

    def render(self) -> str:
        """The reply as aiosmtpd pushes it: continuation lines joined by CRLF."""
        last = len(self.lines) - 1
        return "\r\n".join(
            f"{self.code}{' ' if i == last else '-'}{self.status} {line}"
            for i, line in enumerate(self.lines)
        )


def _sentences(text: str) -> list[str]:
    """`text` cut into sentences, each within REPLY_TEXT_LIMIT (see `Reply.of`); a reason for
    one recipient ("jo@example.org: ...") stays on one line when it fits, so that a reply
    refusing several recipients reads one line per recipient."""
    if _FOR_RECIPIENT.match(text) and len(text) <= REPLY_TEXT_LIMIT:
        return [text]
    pieces = _SENTENCE_END.split(text)  # sentence, closing mark, sentence, closing mark, ...
    sentences = [pieces[i] + (pieces[i + 1] if i + 1 < len(pieces) else "")
                 for i in range(0, len(pieces), 2)]
    lines: list[str] = []
    for sentence in filter(None, (s.strip() for s in sentences)):
        lines.extend(_within_limit(sentence))
    return lines


def _within_limit(sentence: str) -> list[str]:
    """A sentence as one line, or (too long for one) cut at clauses, then at spaces."""
    if len(sentence) <= REPLY_TEXT_LIMIT:
        return [sentence]
    lines: list[str] = []
    current = ""
    for clause in _CLAUSE_END.split(sentence):
        joined = f"{current} {clause}" if current else clause
        if len(joined) <= REPLY_TEXT_LIMIT:
            current = joined
            continue
        if current:
            lines.append(current)
        while len(clause) > REPLY_TEXT_LIMIT:  # a clause too long alone: at a space
            cut = clause.rfind(" ", 0, REPLY_TEXT_LIMIT + 1)
            cut = cut if cut > 0 else REPLY_TEXT_LIMIT
            lines.append(clause[:cut])
            clause = clause[cut:].strip()
        current = clause
    if current:
        lines.append(current)
    return lines


TRY_LATER = Reply.of(451, "4.3.0", "Temporary problem at the mail gateway; please try again later.")


@dataclass(frozen=True)
class Submission:
    """One message as the SMTP front received it."""

    sender: str
    recipients: tuple[str, ...]
    raw: bytes  # CRLF line endings, dot-unstuffed: exactly what gets classified
    user: User | None  # None: a trusted relay peer submitted it
    peer: str
    trace: Trace | None = None  # what the Received field says; None: no SMTP client (tests)
    dsn: Dsn = NO_DSN  # the client's DSN request, passed on with every copy
    smtputf8: bool = False  # the client said SMTPUTF8 on MAIL
    # The registry snapshot its RCPTs read, used again by the decision while it is fresh.
    snapshots: TransactionSnapshot | None = field(default=None, compare=False)

    @functools.cached_property
    def split(self) -> RawMessage:
        """The raw header fields and the body, cut once for every stage that reads them."""
        return RawMessage.split(self.raw)

    def fields_named(self, name: str) -> list[bytes]:
        """The raw header fields called `name` (lower-case)."""
        return [f for f in self.split.fields if field_name(f) == name]
