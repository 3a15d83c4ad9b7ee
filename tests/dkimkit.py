"""DKIM helpers for tests: a signer with a key made by `casegate keys dkim`, and the DNS answer.

No real DNS: `dnsfunc(line)` answers dkimpy's TXT lookup with the record that the key command
printed, exactly as a resolver would hand back its strings joined.
"""

from __future__ import annotations

import re
from collections.abc import Callable

DOMAIN = "cafcass.gov.uk"
SELECTOR = "casegate1"

_STRINGS = re.compile(r'"([^"]*)"')


def dnsfunc(*zone_lines: str) -> Callable[..., bytes | None]:
    """A dkimpy `dnsfunc` that knows the TXT records of `zone_lines` (and nothing else)."""
    records: dict[str, bytes] = {}
    for line in zone_lines:
        name = line.split()[0]
        assert line.split()[1:3] == ["IN", "TXT"], line
        strings = _STRINGS.findall(line)
        assert strings and all(len(s) <= 255 for s in strings), line
        records[name.rstrip(".").lower()] = "".join(strings).encode("ascii")

    def lookup(name: bytes | str, timeout: float = 5) -> bytes | None:
        text = name.decode("ascii") if isinstance(name, bytes) else name
        return records.get(text.rstrip(".").lower())

    return lookup
