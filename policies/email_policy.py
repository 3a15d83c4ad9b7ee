"""The stdlib email policy one classification parses with: `email.policy.default`, except that
a header already parsed for this message is not parsed again.

`EmailMessage` keeps its headers as raw strings and runs the header registry's parser on every
read: one classification asks for Content-Type nine times and reads every header at least twice,
which was more than half the cost of classifying a 10 KB message. The parse is a pure function of
the header's name and value, and the classifier only reads the parsed objects, so each message
gets a policy whose registry remembers what it parsed. It lives as long as that message's parse
tree, and a value longer than one SMTP line is parsed every time (a hostile header block does not
make the memory grow beyond what the stdlib builds anyway). Short values of the MIME headers,
which take few values across all mail, are remembered for every message (a bounded number).
"""

from __future__ import annotations

import email.policy
from email.headerregistry import BaseHeader, HeaderRegistry
from email.message import EmailMessage
from functools import lru_cache
from typing import Any

MAX_REMEMBERED_VALUE = 998  # RFC 5322's line length limit, without the CRLF

# The class HeaderRegistry makes for each header type: the stdlib makes a new one (with
# `type()`) on every parse, which cost as much as parsing a short header.
_CLASSES: dict[tuple[type, type], type] = {}


class _Registry(HeaderRegistry):
    """The default header registry, making each header type's class once."""

    def __getitem__(self, name: str) -> type:
        specific = self.registry.get(name.lower(), self.default_class)
        made = _CLASSES.get((specific, self.base_class))
        if made is None:
            made = _CLASSES[specific, self.base_class] = super().__getitem__(name)
        return made


class _RememberingRegistry(_Registry):
    """The default header registry, remembering each (name, value) it parsed."""

    def __init__(self) -> None:
        super().__init__()
        self._parsed: dict[tuple[str, str], BaseHeader] = {}

    def __call__(self, name: str, value: str) -> Any:
        if len(value) > MAX_REMEMBERED_VALUE:
            return super().__call__(name, value)
        if len(value) <= MAX_SHARED_VALUE and name.lower() in SHARED_NAMES:
            return _shared_parse(name, value)
        key = (name, value)
        header = self._parsed.get(key)
        if header is None:
            header = self._parsed[key] = super().__call__(name, value)
        return header


# The MIME headers take few values across all mail ("text/plain; charset=utf-8", "7bit"...),
# and each message's classification reads them several times: a bounded number of short ones
# are kept parsed for every message (about 15 KiB each; the parsed headers are never changed).
SHARED_NAMES = frozenset({"content-type", "content-transfer-encoding", "content-disposition",
                          "mime-version"})
MAX_SHARED_VALUE = 128
_SHARED = _Registry()  # parses what is not one message's: no memory of its own

# `email.policy.default` for decoding a header outside any one message's parse.
DECODING = email.policy.default.clone(header_factory=_SHARED)


@lru_cache(maxsize=256)
def _shared_parse(name: str, value: str) -> BaseHeader:
    return _SHARED(name, value)


def for_one_message() -> email.policy.EmailPolicy[EmailMessage]:
    """`email.policy.default` with a header registry of its own, for parsing one message."""
    return email.policy.default.clone(header_factory=_RememberingRegistry())
