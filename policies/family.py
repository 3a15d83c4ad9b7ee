"""Family addresses shown to each other (RRP App. 2, Family correspondence; DESIGN ruling 21).

Appendix 2 says mail to families goes "to one verified email address to avoid disclosing email
addresses to other parties (or use BCC)". That protects the addresses themselves, whatever the
message says: two parents in one To line each learn the other's address even from a note about
a meeting room. So when two or more external recipients are family addresses, and at least one
of them is shown in the message's To or Cc, the message is split so each gets a copy showing
only their own address (DESIGN ruling 5), or refused when the organisation chose
`policy.multiple_external = "refuse"`, under the `multiple-external` rule.

A family address is an external recipient who is a registered party (verified with the role
party, for any case: a parent of one case is still a parent) or a personal address (at a
freemail domain: the domains of [domains] freemail).

Why the To and Cc headers matter, and not only the envelope: a recipient in Bcc is not shown to
anyone, and Appendix 2 allows exactly that ("or use BCC"). Judging by the envelope alone would
refuse (in refuse mode) a message the policy allows. But one shown address is enough: a parent
in To is seen by another parent in Bcc, so the test is "two or more family recipients in the
envelope, at least one of them shown", which includes the issue's "two or more in To or Cc".
Shown means the address appears anywhere in a To, Cc, Resent-To or Resent-Cc value, raw or
decoded (a display name that spells an address shows it too); a header that cannot be read
counts as showing every address (fail closed: the split costs nothing but a rewritten To).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Sequence
from email.message import Message
from typing import Any

from policies import header_signals
from policies.model import Category, Recipient, Role, Snapshot, Verification

EVERY_ADDRESS = "*"  # shown_addresses when a recipient header could not be read
RECIPIENT_HEADERS = frozenset({"to", "cc", "resent-to", "resent-cc"})
_ADDRESS = re.compile(r"[^\s<>()\[\],;:\"'@]+@[^\s<>()\[\],;:\"'@]+")


def shown_addresses(message: Message) -> tuple[str, ...]:
    """Every address written in the message's To, Cc, Resent-To and Resent-Cc, lower-cased
    (with its ASCII form for an internationalised domain); ("*",) when one cannot be read."""
    found: dict[str, None] = {}
    try:
        for name, raw in message.raw_items():
            if name.lower() not in RECIPIENT_HEADERS:
                continue
            text = str(raw)
            values = [text]
            if header_signals.may_decode_to_line_break(text):  # encoded words: read them too
                values.append(header_signals.decoded(name, text)[0])
            for value in values:
                for token in _ADDRESS.findall(value.replace("\r", "").replace("\n", " ")):
                    for form in _forms(token.strip(".").lower()):
                        found.setdefault(form)
    except Exception:  # the header registry has raised on hostile input: all count as shown
        return (EVERY_ADDRESS,)
    return tuple(found)


def _forms(address: str) -> Iterable[str]:
    """The address, and the same with its domain in ASCII (IDNA) when it is not."""
    yield address
    local, _, domain = address.rpartition("@")
    if not domain.isascii():
        try:
            yield f"{local}@{domain.encode('idna').decode('ascii')}"
        except UnicodeError:
            return


def _is_shown(recipient: Recipient, shown: Sequence[str]) -> bool:
    if EVERY_ADDRESS in shown:
        return True
    return (recipient.address.lower() in shown
            or (bool(recipient.normalised) and recipient.normalised.lower() in shown))


def _parties(verified: tuple[Verification, ...]) -> frozenset[str]:
    """The addresses verified with the role party (remembered for the last registry tuple)."""
    last_verified, last_parties = _LAST_PARTIES
    if last_verified is verified:
        return last_parties
    parties = frozenset(v.address.lower() for v in verified if v.role is Role.PARTY)
    _LAST_PARTIES[:] = [verified, parties]
    return parties


_LAST_PARTIES: list[Any] = [None, frozenset()]


def is_family_address(recipient: Recipient, snapshot: Snapshot,
                      freemail: Collection[str]) -> bool:
    """An external recipient who is a registered party or at a personal (freemail) domain."""
    if recipient.category is Category.INTERNAL or not recipient.normalised:
        return False
    address = recipient.normalised.lower()
    return address in _parties(snapshot.verified) or recipient.domain in freemail


def exposed_family(recipients: Sequence[Recipient], shown: Sequence[str], snapshot: Snapshot,
                   freemail: Iterable[str]) -> tuple[str, ...]:
    """The family addresses of a message when two or more of them would otherwise reach each
    other with at least one shown; () when the message need not be split for them."""
    personal = frozenset(freemail)
    family = {r.normalised.lower(): r for r in recipients
              if is_family_address(r, snapshot, personal)}
    if len(family) < 2 or not any(_is_shown(r, shown) for r in family.values()):
        return ()
    return tuple(family)
