"""One native pass over a normalised text for every identifier shape (issue 14, point 1).

The identifier recognisers (policies/identifiers.py: NHS, National Insurance and PNC numbers,
case numbers, date-of-birth cues) each have an exact Python regex, with lookarounds and, for
the NHS number, a back-reference. Searching each of them over every text (and again over the
text with its line breaks joined) walked every stretch of digits in Python: about 10 MB/s on
text where every line starts with a digit (Postfix's `smtp-source -l` bodies).

`search(text, patterns)` runs ONE pass of Hyperscan's multi-pattern block mode over the text,
with one expression per exact pattern: the pattern's *shape*, the same regex with its
lookarounds dropped (a one-character lookaround at either end becomes a consumed boundary
character or the end of the text) and its back-references replaced by the group they repeat.
Every match of the exact pattern is then a match of its shape, so Hyperscan reports the end of
each (a few more too). Only around those ends does Python run the exact pattern, in windows of
the pattern's maximal width (`Found.matches`): the candidates. Check digits, prefixes, cues and
dates are validated by the callers, on the candidates only. Text with no shape in it costs one
native pass and nothing else.

Exactness. `Found.matches(p)` yields exactly `p.finditer(text)`: windows reach `width` before
and one character after each reported end, overlapping windows are merged, and a match that
reaches the end of its window (before the text's end) is dropped, since no true match does
(the argument of `identifiers.near_digits`). A pattern whose width is unbounded (the cues, with
their `\\s+`) is a gate: Hyperscan says whether its shape occurs at all, and when it does the
exact pattern searches the whole text. A pattern the translation does not understand, a text
holding a non-ASCII character a pattern could match (a letter under case folding, a digit or
a space of another script: folded text has none), and a shape reported more than `MAX_ENDS`
times fall back to the exact search for that pattern or text. Non-ASCII characters are given
to Hyperscan as "?", one byte each, so that offsets stay those of the `str`.

The pure-Python engine (`RE`) yields the same matches with `identifiers.anchored_finditer`
(the exact pattern searched near digits, or in full): used when the `hyperscan` wheel cannot
be imported, and selectable for tests (`use_engine`). tests/test_scan.py checks that the two
engines report the same candidates.

Why Hyperscan. bench/bench_scan_engines.py asks each engine what the scan asks (every match
of the 5 identifier shapes, and which of the 215 gates occur) over the same 2 MB messages; MB/s,
median of 3 runs, one run on this shared 2-core machine, 2026-12-06:

    text                          hyperscan   google-re2 (Set, then finditer)   re (alternation)
    prose                            225          158                             < 1
    digit-heavy + CSV                117          235                             < 1
    smtp-source -l body            1,411          585                             < 1

The stdlib alternation is out of the question (it tries 200 alternatives at every position).
RE2 is close, and ahead on the CSV, where Hyperscan reports every overlapping end of the
shapes to a Python callback; but RE2's Set says only *which* expressions occur, not where, so
each shape present is searched again, and RE2 cannot run the lookarounds either, so Python
confirms each candidate in both cases. Hyperscan gives offsets of every pattern in the one
pass, stops counting a gate at its first match, and is 2.4x RE2 on the Postfix body and 1.4x
on prose. (google-re2 is not a dependency; the script measures it when installed.)

Hyperscan's scratch space may not be shared by two scans at once: each thread (the gateway
evaluates in worker threads) allocates its own, per database. The database is compiled once
per set of patterns (the policy's), and cached.

Pure: no I/O.
"""

from __future__ import annotations

import contextlib
import importlib
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

HYPERSCAN = "hyperscan"
RE = "re"

_hs: Any
try:
    _hs = importlib.import_module("hyperscan")
except ImportError:  # pragma: no cover - the wheel is a dependency; a platform may lack it
    _hs = None

MAX_WIDTH = 256  # a pattern wider than this is a gate (searched in full when its shape occurs)
MAX_ENDS = 50_000  # ends of one shape in one text beyond which the exact search is cheaper
# Ends of one broken shape looked at for a line break inside (`Found.joined_may_match`); with
# more, the joined view is made without looking.
MAX_BROKEN_ENDS = 64
_LOOK_BACK = 4096  # characters before a broken shape's end that `_break_inside` reads
_REACH = 256  # characters before a line break that `_across` joins and reads

_engine: str = HYPERSCAN if _hs is not None else RE


def available() -> tuple[str, ...]:
    """The engines this platform has, the native one first."""
    return (HYPERSCAN, RE) if _hs is not None else (RE,)


def engine() -> str:
    """The engine `search` uses when not told."""
    return _engine


def set_engine(name: str) -> None:
    """Choose the engine for `search` ("hyperscan" or "re"), process-wide."""
    global _engine
    if name not in available():
        raise ValueError(f"scan engine {name!r} is not available here ({', '.join(available())})")
    _engine = name


@contextlib.contextmanager
def use_engine(name: str) -> Iterator[None]:
    """`set_engine(name)` for the duration of a block (tests)."""
    before = _engine
    set_engine(name)
    try:
        yield
    finally:
        set_engine(before)


# --- what the callers see ---------------------------------------------------------------------

Finditer = Callable[[str, re.Pattern[str]], Iterator[re.Match[str]]]


def _key(pattern: re.Pattern[str]) -> int:
    """A pattern's key in a scan: its identity (hashing a compiled pattern hashes its code,
    which costs more than the lookups it serves)."""
    return id(pattern)


def _broken_key(pattern: re.Pattern[str]) -> int:
    """The key of a pattern's `shape(broken=True)` in a scan."""
    return -id(pattern)


@dataclass
class Found:
    """The candidates of one text: `matches(p)` is `p.finditer(text)` for each pattern given
    to `search`, computed only around where the native pass saw p's shape."""

    text: str
    exact: Finditer  # the search used for a pattern the native pass could not narrow
    _native: _Native | None = None  # None: no native pass
    _ends: dict[int, list[int]] = field(default_factory=dict)  # key -> ends, if any
    _unsure: frozenset[int] = frozenset()  # keys reported too often to be told apart

    def _seen(self, key: int) -> bool:
        """Whether the native pass may have seen key's shape (True: it did, or cannot say)."""
        assert self._native is not None
        return key in self._ends or key not in self._native.keys or key in self._unsure

    def joined_may_match(self) -> bool:
        """Whether a pattern given to `search` as `broken` may match in the text's
        `normalise.joined` view where it does not match in the text itself (False only when
        none of them certainly does).

        A broken shape also matches where the pattern occurs whole, with no line break inside:
        the text's own search finds those. So each end a broken shape reported is looked at
        (`_break_inside`), up to MAX_BROKEN_ENDS of them. A pattern whose width is unbounded
        (the date-of-birth cues) is not: the view brings a cue and a date on other lines
        closer together, which may make a date of birth of them (`identifiers.DOB_WINDOW`).
        """
        native = self._native
        if native is None:
            return True
        for key in native.broken:
            if key not in native.keys or key in self._unsure:
                return True  # no shape, or too many ends to tell apart
            ends = self._ends.get(key, ())
            own = native.own_patterns.get(key)
            if ends and (own is None or len(ends) > MAX_BROKEN_ENDS):
                return True
            if own is not None and any(_break_inside(self.text, end, own) for end in ends):
                return True
        return False

    @property
    def native(self) -> bool:
        """Whether the native engine scanned the text (else every pattern is `present`)."""
        return self._native is not None

    def present_among(self, patterns: Sequence[re.Pattern[str]]) -> set[int] | None:
        """The indexes of `patterns` that may match (None: every one may): `present` of each,
        at the cost of the few the native pass saw."""
        if self._native is None:
            return None
        index = _indexes(tuple(patterns))
        found = {index[key] for key in self._ends if key in index}
        found.update(index[key] for key in self._unsure if key in index)
        found.update(self._native.unknown(index))
        return found

    def present(self, pattern: re.Pattern[str]) -> bool:
        """Whether the pattern may match (False only when it certainly does not)."""
        return self._native is None or self._seen(_key(pattern))

    def matches(self, pattern: re.Pattern[str]) -> Iterator[re.Match[str]]:
        """`pattern.finditer(text)`, in order (see the module's docstring)."""
        key = _key(pattern)
        if self._native is None or key not in self._native.keys or key in self._unsure:
            return self.exact(self.text, pattern)
        ends = self._ends.get(key)
        if not ends:
            return iter(())
        width = self._native.widths.get(key)
        if width is None:  # a gate: the shape occurs, search the text
            return self.exact(self.text, pattern)
        return _in_windows(self.text, pattern, ends, width)


_INDEXES: dict[tuple[int, ...], tuple[Any, dict[int, int]]] = {}


def _indexes(patterns: tuple[re.Pattern[str], ...]) -> dict[int, int]:
    """key -> index in `patterns`, made once per tuple of patterns (kept with it)."""
    same = _INDEXES.get((id(patterns),))
    if same is not None and same[0] is patterns:
        return same[1]  # the very tuple of an earlier call (a policy's, made once)
    ids = tuple(map(id, patterns))
    cached = _INDEXES.get(ids)
    if cached is not None and cached[0] == patterns:
        return cached[1]
    index = {_key(p): i for i, p in reversed(list(enumerate(patterns)))}
    if len(_INDEXES) >= _MAX_DATABASES:
        _INDEXES.pop(next(iter(_INDEXES)), None)
    _INDEXES[ids] = _INDEXES[(id(patterns),)] = (patterns, index)
    return index


def _in_windows(text: str, pattern: re.Pattern[str], ends: Sequence[int],
                width: int) -> Iterator[re.Match[str]]:
    size = len(text)
    start = end = -1
    for reported in ends:
        low, high = max(0, reported - width - 1), min(size, reported + 1)
        if low <= end:
            end = max(end, high)
            continue
        if end >= 0:
            yield from _window(text, pattern, start, end)
        start, end = low, high
    if end >= 0:
        yield from _window(text, pattern, start, end)


def _window(text: str, pattern: re.Pattern[str], start: int,
            end: int) -> Iterator[re.Match[str]]:
    for match in pattern.finditer(text, start, end):
        if match.end() < end or end == len(text):
            yield match


def search(text: str, patterns: Sequence[re.Pattern[str]], exact: Finditer,
           engine_name: str | None = None, gates: Sequence[re.Pattern[str]] = (),
           broken: Sequence[re.Pattern[str]] = ()) -> Found:
    """One pass of the engine over `text` for all `patterns` and `gates` (see the module's
    docstring). `exact(text, pattern)` must yield `pattern.finditer(text)`: it is what the
    pure-Python engine uses, and what the native one falls back to. For a gate only
    `Found.present` is looked for (Hyperscan stops counting it at its first match). For the
    `broken` patterns, `Found.joined_may_match` says whether they may match in the text's
    joined view, so that a view without a candidate is neither made nor searched."""
    chosen = engine_name or _engine
    if chosen == RE or not (patterns or gates):
        return Found(text, exact)
    native = _native(tuple(patterns), tuple(gates), tuple(broken))
    if native is None or _needs_python(text):
        return Found(text, exact)
    return native.scan(text, exact)


# Non-ASCII characters that the exact patterns could match where Hyperscan sees "?": letters
# under Unicode case folding ("K", Kelvin sign, for "k"), digits and spaces of other scripts.
_RISKY = re.compile(r"(?=[^\x00-\x7f])(?:[\d\s]|(?i:[a-z]))")


def _needs_python(text: str) -> bool:
    """`_RISKY.search(text) is not None`, from the text's distinct characters: the regex tries
    every position of a non-ASCII text in the interpreter's engine (10 ms for 1 MB)."""
    return not text.isascii() and any(_RISKY.match(char) for char in other_characters(text))


def other_characters(text: str) -> set[str]:
    """The distinct characters of a text that are not ASCII, found at C speed: a slice at a
    time encoded, its ASCII bytes deleted (a character's UTF-8 bytes other than ASCII are
    never ASCII), and what remains decoded."""
    found: set[str] = set()
    for data in utf8_slices(text):
        found.update(data.translate(None, _ASCII_BYTES).decode("utf-8", "surrogatepass"))
    return found


def utf8_slices(text: str) -> Iterator[bytes]:
    """The text's UTF-8 bytes (lone surrogates kept), a slice of `_UTF8_SLICE` characters at
    a time: what is asked of every byte at C speed (`bytes.translate`) without the text's
    bytes whole beside it."""
    for start in range(0, len(text), _UTF8_SLICE):
        yield text[start:start + _UTF8_SLICE].encode("utf-8", "surrogatepass")


_UTF8_SLICE = 1 << 18
_ASCII_BYTES = bytes(range(0x80))


# --- the native engine ------------------------------------------------------------------------


class _Native:
    """One Hyperscan database for a tuple of patterns, and a scratch space per thread."""

    def __init__(self, database: Any, ids: list[int], widths: dict[int, int | None],
                 broken: tuple[int, ...],
                 own_patterns: dict[int, _Own] | None = None) -> None:
        self.database = database
        self.ids = ids  # Hyperscan's expression id -> the key of its pattern
        self.keys = frozenset(ids)
        self.widths = widths
        self.broken = broken
        # A broken shape's key -> what `_break_inside` needs of its pattern; not there:
        # unbounded, or wider than MAX_WIDTH
        self.own_patterns = own_patterns or {}
        self.local = threading.local()
        self._unknown: dict[int, tuple[int, ...]] = {}

    def unknown(self, index: dict[int, int]) -> tuple[int, ...]:
        """The indexes of `index` (from `_indexes`, kept alive there) not in this database."""
        found = self._unknown.get(id(index))
        if found is None:
            found = self._unknown[id(index)] = tuple(
                i for key, i in index.items() if key not in self.keys)
        return found

    def scratch(self) -> Any:
        scratch = getattr(self.local, "scratch", None)
        if scratch is None:
            assert _hs is not None
            scratch = self.local.scratch = _hs.Scratch(self.database)
        return scratch

    def scan(self, text: str, exact: Finditer) -> Found:
        ends: dict[int, list[int]] = {}
        unsure: set[int] = set()
        ids = self.ids

        def on_match(ident: int, _start: int, end: int, _flags: int, _context: object) -> None:
            found = ends.setdefault(ids[ident], [])
            if len(found) < MAX_ENDS:
                found.append(end)
            else:
                unsure.add(ids[ident])

        data = text.encode("ascii", "replace") if not text.isascii() else text.encode("ascii")
        self.database.scan(data, match_event_handler=on_match, scratch=self.scratch())
        del data
        # Past MAX_ENDS, the exact search is cheaper than the windows (`Found.matches`).
        return Found(text, exact, self, ends, frozenset(unsure))


_DATABASES: dict[tuple[tuple[int, ...], ...], tuple[Any, _Native | None]] = {}
_MAX_DATABASES = 32
_BY_TUPLES: dict[tuple[int, int, int], tuple[Any, _Native | None]] = {}


def _native(patterns: tuple[re.Pattern[str], ...], gates: tuple[re.Pattern[str], ...] = (),
            broken: tuple[re.Pattern[str], ...] = ()) -> _Native | None:
    """The compiled database for these patterns, gates and broken shapes (None: none has a
    shape), compiled once and kept (by the patterns' identities, the patterns kept with it)."""
    given = (patterns, gates, broken)
    same = _BY_TUPLES.get((id(patterns), id(gates), id(broken)))
    if same is not None and all(a is b for a, b in zip(same[0], given, strict=True)):
        return same[1]  # the very tuples of the last call (a policy's, made once)
    key = tuple(tuple(map(id, group)) for group in given)
    cached = _DATABASES.get(key)
    if cached is not None and cached[0] == given:  # identical objects: compared by identity
        built = cached[1]
    else:
        built = _compile(patterns, gates, broken)
        if len(_DATABASES) >= _MAX_DATABASES:
            _DATABASES.pop(next(iter(_DATABASES)), None)
        _DATABASES[key] = (given, built)
    if len(_BY_TUPLES) >= _MAX_DATABASES:
        _BY_TUPLES.pop(next(iter(_BY_TUPLES)), None)
    _BY_TUPLES[(id(patterns), id(gates), id(broken))] = (given, built)
    return built


def _compile(patterns: tuple[re.Pattern[str], ...], gates: tuple[re.Pattern[str], ...],
             broken: tuple[re.Pattern[str], ...]) -> _Native | None:
    if _hs is None:
        return None
    expressions: list[bytes] = []
    flags: list[int] = []
    ids: list[int] = []
    widths: dict[int, int | None] = {}
    own_patterns: dict[int, _Own] = {}
    gate_keys = {_key(g) for g in gates}
    wanted = [*((p, _key(p), False) for p in dict.fromkeys((*patterns, *gates)).keys()),
              *((p, _broken_key(p), True) for p in broken)]
    for pattern, key, is_broken in wanted:
        translated = _shape(pattern, is_broken)
        if translated is None:
            continue
        expression, width = translated.expression, translated.width
        if key in gate_keys:
            width = None
        flag = _hs.HS_FLAG_CASELESS if pattern.flags & re.IGNORECASE else 0
        if width is None and not is_broken:
            flag |= _hs.HS_FLAG_SINGLEMATCH
        # A broken shape reports every end (`Found.joined_may_match` looks at them; and
        # without SINGLEMATCH Hyperscan scans prose a third faster with them: 7.9 against
        # 12.7 ms for 2 MB, measured 2026-12-07)
        if is_broken and translated.own_width is not None:
            own_patterns[key] = _Own(pattern, translated.own_width, translated.boundary_after,
                                   translated.ends_blank)
        try:  # each alone first, so that one the compiler refuses falls back alone
            _hs.Database(mode=_hs.HS_MODE_BLOCK).compile(expressions=[expression], flags=flag)
        except _hs.error:
            continue
        ids.append(key)
        widths[key] = width
        expressions.append(expression)
        flags.append(flag)
    if not expressions:
        return None
    database = _hs.Database(mode=_hs.HS_MODE_BLOCK)
    database.compile(expressions=expressions, ids=list(range(len(ids))), flags=flags)
    return _Native(database, ids, widths, tuple(_broken_key(p) for p in broken), own_patterns)


@dataclass(frozen=True)
class _Own:
    """A broken shape's pattern, as `_break_inside` reads it."""

    pattern: re.Pattern[str]
    width: int  # its widest match
    boundary_after: bool  # its shape ends with a boundary character (or the text's end)
    ends_blank: bool  # a match of it may end with a blank or a line break (True: unsure)


def _break_inside(text: str, end: int, own: _Own) -> bool:
    """Whether a match of the pattern in the text's joined view may hold a line break that
    the view removed, where the broken shape's match ends at `end` (False only when it
    certainly does not).

    Hyperscan reports every end of the shape: one where the pattern's last character is
    followed by nothing more (or only by its boundary character) among them, for each match.
    After the last line break inside such a match come blanks of its run and then at most
    `width` characters of the pattern's own; before the run, at most `width` more. So when the
    last line break before the pattern's last character is followed by more than `width`
    characters besides those blanks, no line break is inside. When it is not, the pattern
    itself is tried across that run, joined as `normalise.joined` joins it (`_across`). Only
    _LOOK_BACK characters are read; what they cannot settle counts as a break.
    """
    lasts = [end - 1] if own.boundary_after else [end]  # just after the pattern's last character
    if own.boundary_after and end >= len(text) - 1:
        lasts.append(end)  # the boundary may be the end of the text (or a last line break)
    for last in lasts:
        start = max(0, last - _LOOK_BACK)
        before = text[start:last]
        newline = before.rfind("\n")
        after = before[newline + 1:].lstrip(" ")  # after the last line break, but its blanks
        if len(after) > own.width or (newline < 0 and start == 0):
            continue  # no line break within the match
        if not after and not own.ends_blank:
            continue  # a run after the pattern's last character: another end has it without
        if newline < 0 or not after or _across(text, start + newline, last - len(after), own):
            return True
    return False


def _across(text: str, newline: int, resumed: int, own: _Own) -> bool:
    """Whether the pattern matches across the run of blanks and line breaks that holds the
    line break at `newline` and ends at `resumed`, in the view joined as `normalise.joined`
    joins it (True also when the _REACH characters before the run cannot settle it)."""
    back = max(0, newline - _REACH)
    run_start = back + len(text[back:newline].rstrip(" \n"))
    joined = join_runs(text[back:run_start])  # the earlier runs in reach, joined too
    if back > 0 and len(joined) <= own.width + 1:
        return True  # mostly runs: one cut by the reach might be within the match
    left = joined[-(own.width + 1):]  # the pattern's characters before the run, and one more
    run = text[run_start:resumed]
    view = left + _glue_of(run) + text[resumed:resumed + own.width + 16]
    return any((found := own.pattern.match(view, at)) is not None and found.end() > len(left)
               for at in range(len(left)))


# A run of blanks and line breaks, and what `normalise.joined` makes of it: a space when a
# blank is at either end of it, else nothing. Here, since normalise imports this module.
_RUN = re.compile(r" *\n[ \n]*")


def join_runs(text: str) -> str:
    """Every run of blanks and line breaks in `text` joined (`normalise.joined`'s rule)."""
    return _RUN.sub(lambda run: _glue_of(run.group()), text)


def _glue_of(run: str) -> str:
    return "" if run.strip(" ") == run else " "


# --- line ends, for the parsers ---------------------------------------------------------------
#
# Whether a message is CRLF throughout (policies/mime.py), and whether a text holds a CR that is
# not part of a CRLF or another control character (policies/normalise.py), are asked of every
# byte of a message. Python's tools take two counts and a search for the first, a search that
# stops at every CR and a translation for the second; one native scan for what is not a CRLF
# (or is a control) takes a third of the time. The pure-Python engine answers with those, and
# so does the native one for data shorter than NATIVE_LINE_ENDS (a native call costs a few
# microseconds, the passes over a short message less).

_NOT_CRLF = (rb"\r[^\n]", rb"\r\z", rb"[^\r]\n", rb"\A\n")  # a lone CR; a lone LF
_CONTROL = rb"[\x00-\x09\x0b\x0c\x0e-\x1f\x7f]"  # a C0 control but CR and LF, or DEL
_LONE_CR_OR_CONTROL = (*_NOT_CRLF[:2], _CONTROL)
_NOT_CRLF_OR_NUL = (*_NOT_CRLF, rb"\x00")
_LONE_CR_BYTES = re.compile(rb"\r(?!\n)")
_CONTROL_BYTES = bytes([*range(0x00, 0x0A), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F])
_SMALL_DATABASES: dict[tuple[tuple[bytes, ...], int], tuple[Any, threading.local]] = {}
_SMALL_LOCK = threading.Lock()
NATIVE_LINE_ENDS = 8192  # bytes


def crlf_throughout(data: bytes) -> bool:
    """Whether every CR in `data` is followed by an LF, and every LF follows a CR."""
    if _engine == RE or _hs is None or len(data) < NATIVE_LINE_ENDS:
        return (data.count(b"\r") == data.count(b"\n")
                and _LONE_CR_BYTES.search(data) is None)
    return not _line_end_seen(data, _NOT_CRLF)


def unsafe_line_ends(data: bytes) -> bool:
    """Whether `data` holds a CR not followed by an LF, an LF that no CR precedes, or a NUL:
    what SMTP may not carry (SECURITY.md items 1 and 2). Asked of every message at its end of
    data and of every copy handed over; three counts and a search took 0.19 ms for 100 KB."""
    if _engine == RE or _hs is None or len(data) < NATIVE_LINE_ENDS:
        crlf = data.count(b"\r\n")
        return b"\x00" in data or data.count(b"\r") != crlf or data.count(b"\n") != crlf
    return bool(_line_end_seen(data, _NOT_CRLF_OR_NUL))


def lone_cr_and_controls(data: bytes) -> tuple[bool, bool]:
    """Whether a CR in `data` is not followed by an LF; whether it holds a C0 control
    character other than CR and LF, or DEL."""
    if _engine == RE or _hs is None or len(data) < NATIVE_LINE_ENDS:
        return (_LONE_CR_BYTES.search(data) is not None,
                len(data.translate(None, _CONTROL_BYTES)) != len(data))
    seen = _line_end_seen(data, _LONE_CR_OR_CONTROL)
    return bool(seen & {0, 1}), 2 in seen


def warm_line_ends() -> None:
    """Compile the line-end checks' databases (the first long message does otherwise)."""
    if _hs is not None:
        _small_database(_NOT_CRLF)
        _small_database(_LONE_CR_OR_CONTROL)
        _small_database(_NOT_CRLF_OR_NUL)


def shape_starts(data: bytes, shapes: tuple[bytes, ...]) -> list[tuple[int, int]] | None:
    """Where matches of `shapes` (Hyperscan expressions over bytes) start in `data`: each
    place, in increasing order, with the shapes that match from there as bits (bit i: shape
    i; a match's leftmost start, HS_FLAG_SOM_LEFTMOST). None when the scan engine is
    Python's: the caller searches `data` itself. (For a shape that Python's regex engine
    would try at nearly every byte, a table's digits: the places it matches, in one pass.)"""
    if _engine == RE or _hs is None:
        return None
    database, scratch = _small_scan(shapes, _hs.HS_FLAG_SOM_LEFTMOST)
    found: dict[int, int] = {}
    get = found.get

    def on_match(ident: int, start: int, _end: int, _flags: int, _context: object) -> None:
        found[start] = get(start, 0) | 1 << ident

    database.scan(data, match_event_handler=on_match, scratch=scratch)
    return sorted(found.items())


def _line_end_seen(data: bytes, shapes: tuple[bytes, ...]) -> set[int]:
    """Which of `shapes` (their indexes) occur in `data`."""
    database, scratch = _small_scan(shapes)
    seen: set[int] = set()

    def on_match(ident: int, _start: int, _end: int, _flags: int, _context: object) -> None:
        seen.add(ident)  # at most once per shape (HS_FLAG_SINGLEMATCH)

    database.scan(data, match_event_handler=on_match, scratch=scratch)
    return seen


def _small_scan(shapes: tuple[bytes, ...], flag: int | None = None) -> tuple[Any, Any]:
    """`_small_database`'s database of `shapes`, and this thread's scratch space for it."""
    database, local = _small_database(shapes, flag)
    scratch = getattr(local, "scratch", None)
    if scratch is None:
        scratch = local.scratch = _hs.Scratch(database)
    return database, scratch


def _small_database(shapes: tuple[bytes, ...],
                    flag: int | None = None) -> tuple[Any, threading.local]:
    """The compiled database of `shapes`, each with `flag` (HS_FLAG_SINGLEMATCH unless
    given), and its scratch space per thread; compiled once."""
    flag = _hs.HS_FLAG_SINGLEMATCH if flag is None else flag
    built = _SMALL_DATABASES.get((shapes, flag))
    if built is None:
        with _SMALL_LOCK:
            built = _SMALL_DATABASES.get((shapes, flag))
            if built is None:
                database = _hs.Database(mode=_hs.HS_MODE_BLOCK)
                database.compile(expressions=list(shapes), ids=list(range(len(shapes))),
                                 flags=[flag] * len(shapes))
                built = _SMALL_DATABASES[shapes, flag] = (database, threading.local())
    return built


# --- from an exact pattern to its shape -------------------------------------------------------

_SPACE_CLASS = r"\t\n\x0b\x0c\r\x1c-\x1f "  # what Python's \s matches in ASCII


class _Untranslatable(Exception):
    pass


_WIDER: dict[re.Pattern[str], re.Pattern[str]] = {}


def shape_as(pattern: re.Pattern[str], wider: re.Pattern[str]) -> None:
    """Translate `wider` for `pattern`'s shape: a regex that matches, at every position where
    `pattern` matches, the same span (and maybe more), written so that its lookarounds sit at
    its ends, where they become boundary characters. (`pattern` may be written for the speed of
    Python's engine, with a lookbehind after its first character.)"""
    _WIDER[pattern] = wider


# A run of line breaks and blanks as `normalise.joined` removes or makes one space; and one it
# removes (no blank at either end): all a run between two characters that cannot be a blank
# can be, where the view holds the pattern.
_BREAK = r"(?:\x20*\n[\x20\n]*)?"
_REMOVED = r"(?:\n(?:[\x20\n]*\n)?)?"


def shape(pattern: re.Pattern[str], broken: bool = False) -> tuple[bytes, int | None] | None:
    """The Hyperscan expression whose matches include every match of `pattern` (lookarounds
    dropped or made into boundary characters, back-references made copies of their group),
    and the pattern's maximal width (None: wider than MAX_WIDTH, a gate). None when the
    pattern holds something this translation does not know, or can match empty text.

    `broken`: the shape with a run of line breaks and blanks allowed between any two of its
    characters (unbounded: a gate). It occurs in a text wherever the shape occurs in the text's
    `normalise.joined` view: a character of the view is one of the text, a removed run is
    allowed between two, and a space made of a run is one of the run's blanks with the rest of
    the run before or after it. So after a character that cannot be a blank only a removed run
    is allowed (one with a line break at both ends), and any run before and after one that can
    be: fewer characters that may start a run make the scan faster (the native pass over a
    100 KB digit-heavy letter and its CSV: 0.35 -> 0.31 ms). (None is needed between the
    boundary character and the first, since a run's last blank or line break is a boundary
    character of a broken shape itself.)"""
    translated = _shape(pattern, broken)
    return None if translated is None else (translated.expression, translated.width)


@dataclass(frozen=True)
class _Shape:
    expression: bytes
    width: int | None  # `shape`'s
    own_width: int | None  # the widest match of the pattern (None: wider than MAX_WIDTH)
    boundary_after: bool  # the expression ends with a boundary character (or the text's end)
    ends_blank: bool  # a match may end with a blank or a line break (True: unsure)


def _shape(pattern: re.Pattern[str], broken: bool) -> _Shape | None:
    """`shape`, and what `Found.joined_may_match` needs to know of a broken one."""
    try:
        parser = importlib.import_module("re._parser")  # the stdlib's own parser (private)
        low, high = parser.parse(pattern.pattern, pattern.flags).getwidth()
        if low < 1:
            return None
        written = _WIDER.get(pattern, pattern)
        tree = parser.parse(written.pattern, written.flags)
        items = list(tree)
        widest = max(high, tree.getwidth()[1])
        translator = _Translator(parser, written.flags, broken)
        prefix = suffix = ""
        if items and items[0][0] is parser.ASSERT_NOT and items[0][1][0] == -1:
            prefix = translator.boundary(items.pop(0)[1][1], start=True)
        if items and items[-1][0] is parser.ASSERT_NOT and items[-1][1][0] == 1:
            suffix = translator.boundary(items[-1][1][1], start=False)
            items.pop()
        body = translator.sequence(items)
        if not body:
            return None
        width = high if high <= MAX_WIDTH and not broken else None
        expression = prefix + body + suffix
        return _Shape(expression.encode("ascii"), width,
                      widest if widest <= MAX_WIDTH else None, bool(suffix),
                      _ends_blank(parser, tree))
    except Exception:  # _Untranslatable, or a parse tree of a shape this does not know
        return None


def _ends_blank(p: Any, items: Any) -> bool:
    """Whether a match of the parsed `items` may end with a blank or a line break (True when
    this reading cannot tell)."""
    for op, av in reversed(list(items)):
        if op in (p.ASSERT, p.ASSERT_NOT, p.AT):
            continue  # takes no character
        if op is p.LITERAL:
            return av in (0x20, 0x0A)
        if op is p.IN:
            return _class_blank(p, av)
        if op in (p.MAX_REPEAT, p.MIN_REPEAT, p.POSSESSIVE_REPEAT):
            inner, may_be_empty = av[2], av[0] == 0 or av[2].getwidth()[0] == 0
        elif op is p.SUBPATTERN:
            inner, may_be_empty = av[3], av[3].getwidth()[0] == 0
        else:  # a branch, a back-reference, any character: unsure
            return True
        if _ends_blank(p, inner):
            return True
        if not may_be_empty:
            return False
    return True  # the whole may be empty: what comes before it is unknown here


def _class_blank(p: Any, members: Any) -> bool:
    """Whether a character class holds a blank or a line break (True when unsure)."""
    for op, av in members:
        if op is p.LITERAL and av in (0x20, 0x0A):
            return True
        if op is p.RANGE and (av[0] <= 0x20 <= av[1] or av[0] <= 0x0A <= av[1]):
            return True
        if op is p.CATEGORY and av is not p.CATEGORY_DIGIT and av is not p.CATEGORY_WORD:
            return True  # a space category, or a negated one
        if op not in (p.LITERAL, p.RANGE, p.CATEGORY):
            return True  # a negated class
    return False


class _Translator:
    def __init__(self, parser: Any, flags: int, broken: bool = False) -> None:
        self.p = parser
        self.flags = flags
        self.broken = broken  # a run of line breaks and blanks allowed between two characters
        self.groups: dict[int, str] = {}

    def boundary(self, inner: Any, start: bool) -> str:
        """`(?<!X)` at the start as "start of text or a character not X"; `(?!X)` at the end
        as "such a character or the end". Anything but one character class is dropped."""
        items = list(inner)
        if len(items) != 1:
            return ""
        try:
            members = self.members(*items[0])
        except _Untranslatable:
            return ""
        if members is None:
            return ""
        negated = f"[^{members}]"
        if "?" in _chars(members):  # '?' stands for every non-ASCII character here
            return ""
        if self.broken:  # a blank or a line break of a run `joined` turned into a space or less
            negated = f"{negated}|[\\x20\\n]"
        return f"(?:^|{negated})" if start else f"(?:{negated}|$)"

    def members(self, op: Any, av: Any) -> str | None:
        """The inside of a character class for one LITERAL or IN item (None: not that)."""
        p = self.p
        if op is p.LITERAL:
            return _escape(av)
        if op is p.IN:
            if av and av[0][0] is p.NEGATE:
                return None
            return "".join(self.member(m_op, m_av) for m_op, m_av in av)
        return None

    def member(self, op: Any, av: Any) -> str:
        p = self.p
        if op is p.LITERAL:
            return _escape(av)
        if op is p.RANGE:
            low, high = av
            if high > 0x7F:
                raise _Untranslatable
            return f"{_escape(low)}-{_escape(high)}"
        if op is p.CATEGORY:
            if av is p.CATEGORY_DIGIT:
                return "0-9"
            if av is p.CATEGORY_SPACE:
                return _SPACE_CLASS
        raise _Untranslatable

    def sequence(self, items: Any) -> str:
        return "".join(self.item(op, av) for op, av in items)

    def item(self, op: Any, av: Any) -> str:
        p = self.p
        if op in (p.LITERAL, p.NOT_LITERAL, p.ANY, p.IN):
            character = self.character(op, av)
            if not self.broken:
                return character
            if self._may_be_blank(op, av):  # the space a run made, with the rest of the run
                return _BREAK + character + _BREAK
            return character + _REMOVED
        if op in (p.MAX_REPEAT, p.MIN_REPEAT, p.POSSESSIVE_REPEAT):
            low, high, sub = av
            inner = self.sequence(sub)
            if not inner:
                return ""
            top = "" if high is p.MAXREPEAT or high >= p.MAXREPEAT else str(high)
            return f"(?:{inner}){{{low},{top}}}"
        if op is p.SUBPATTERN:
            group, add_flags, del_flags, sub = av
            if add_flags or del_flags:
                raise _Untranslatable
            inner = self.sequence(sub)
            if group is not None:
                self.groups[group] = inner
            return f"(?:{inner})"
        if op is p.ATOMIC_GROUP:
            return f"(?:{self.sequence(av)})"
        if op is p.BRANCH:
            return "(?:" + "|".join(self.sequence(b) for b in av[1]) + ")"
        if op is p.GROUPREF:
            if av not in self.groups:
                raise _Untranslatable
            return f"(?:{self.groups[av]})"
        if op in (p.ASSERT, p.ASSERT_NOT, p.AT):
            return ""  # dropped: the shape matches more, never less
        raise _Untranslatable

    def _may_be_blank(self, op: Any, av: Any) -> bool:
        """Whether a LITERAL, NOT_LITERAL, ANY or IN item may match a blank (True: unsure)."""
        p = self.p
        if op is p.LITERAL:
            return bool(av == 0x20)
        if op is p.NOT_LITERAL:
            return bool(av != 0x20)
        if op is p.ANY:
            return True
        return _class_blank(p, av)

    def character(self, op: Any, av: Any) -> str:
        """One character: a LITERAL, NOT_LITERAL, ANY or IN item."""
        p = self.p
        if op is p.LITERAL:
            return _escape(av)
        if op is p.NOT_LITERAL:
            if av == ord("?") or av > 0x7F:
                raise _Untranslatable
            return f"[^{_escape(av)}]"
        if op is p.ANY:
            return r"[\x00-\xff]" if self.flags & re.DOTALL else r"[^\n]"
        if av and av[0][0] is p.NEGATE:
            inside = "".join(self.member(m_op, m_av) for m_op, m_av in av[1:])
            if "?" in _chars(inside):
                raise _Untranslatable
            return f"[^{inside}]"
        return "[" + "".join(self.member(m_op, m_av) for m_op, m_av in av) + "]"


def _escape(code: int) -> str:
    if code > 0x7F:
        raise _Untranslatable
    return f"\\x{code:02x}"


def _chars(members: str) -> set[str]:
    """The characters a class body written by `_Translator` holds (for the '?' check)."""
    try:
        return {chr(c) for c in range(0x80) if re.fullmatch(f"[{members}]", chr(c))}
    except re.error:
        return {"?"}


# --- how much of a text before a match a window must hold --------------------------------------
#
# A long text can be read a window at a time, each window repeating the end of the one before
# (normalise.quoted_windows). Counted in characters that are neither a blank nor a line break,
# the repeat is bounded even for a pattern with `\s+` in it (the date-of-birth cues); and the
# joined view (`join_runs`) only removes or collapses blanks and line breaks, so the count is
# the same in it.


class _Unbounded(Exception):
    """A match may span any number of characters that are not blanks."""


def solid_width(pattern: re.Pattern[str]) -> int | None:
    """The most characters other than a blank (" ") or a line break that a match of `pattern`
    spans, what its lookarounds read included, in folded text (where `\\s` matches only those
    two). None when a window of whole lines that holds that many such characters before the
    window's own text might still miss a match ending there: the count is unbounded, the
    pattern may start with a blank (the blanks could lie before the window) or looks behind
    for something that must be there (at a window's start nothing is), or this reading does
    not know a part of it. (A negative lookbehind at a window's start sees nothing, as it
    would see a line break: it adds a match there, if anything, never hides one.)"""
    try:
        parser = importlib.import_module("re._parser")  # the stdlib's own parser (private)
        items = parser.parse(pattern.pattern, pattern.flags)
        reader = _Solid(parser)
        if reader.may_start_blank(items):
            return None
        return reader.width(items)
    except Exception:  # _Unbounded, or a parse tree of a shape this does not know
        return None


class _Solid:
    """`solid_width`'s reading of a parse tree (re._parser's items)."""

    def __init__(self, parser: Any) -> None:
        self.p = parser
        self.groups: dict[int, int] = {}

    def width(self, items: Any) -> int:
        return sum(self.item(op, av) for op, av in items)

    def item(self, op: Any, av: Any) -> int:
        p = self.p
        if op in (p.LITERAL, p.NOT_LITERAL, p.ANY, p.IN):
            return 0 if self.blank_only(op, av) else 1
        if op is p.AT:
            return 0
        if op in (p.MAX_REPEAT, p.MIN_REPEAT, p.POSSESSIVE_REPEAT):
            _low, high, sub = av
            inner = self.width(sub)
            if inner and (high is p.MAXREPEAT or high >= p.MAXREPEAT):
                raise _Unbounded
            return high * inner
        if op is p.SUBPATTERN:
            group, _add, _del, sub = av
            inner = self.width(sub)
            if group is not None:
                self.groups[group] = inner
            return inner
        if op is p.ATOMIC_GROUP:
            return self.width(av)
        if op is p.BRANCH:
            return max(self.width(branch) for branch in av[1])
        if op is p.GROUPREF:
            return self.groups[av]
        if op is p.ASSERT_NOT or (op is p.ASSERT and av[0] == 1):
            return self.width(av[1])
        raise _Unbounded  # a positive lookbehind, a conditional group, what this does not know

    def blank_only(self, op: Any, av: Any) -> bool:
        """Whether a one-character item matches only a blank or a line break."""
        p = self.p
        if op is p.LITERAL:
            return bool(av in (0x20, 0x0A))
        if op is not p.IN or not av:
            return False
        return all((m_op is p.LITERAL and m_av in (0x20, 0x0A))
                   or (m_op is p.CATEGORY and m_av is p.CATEGORY_SPACE) for m_op, m_av in av)

    def may_start_blank(self, items: Any) -> bool:
        """Whether a match of the parsed `items` may start with a blank or a line break (True
        when this reading cannot tell)."""
        p = self.p
        for op, av in items:
            if op in (p.ASSERT, p.ASSERT_NOT, p.AT):
                continue  # takes no character
            if op is p.LITERAL:
                return bool(av in (0x20, 0x0A))
            if op is p.IN:
                return _class_blank(p, av)
            if op in (p.MAX_REPEAT, p.MIN_REPEAT, p.POSSESSIVE_REPEAT):
                subs, may_be_empty = [av[2]], av[0] == 0 or av[2].getwidth()[0] == 0
            elif op is p.SUBPATTERN:
                subs, may_be_empty = [av[3]], av[3].getwidth()[0] == 0
            elif op is p.BRANCH:
                subs = list(av[1])
                may_be_empty = any(sub.getwidth()[0] == 0 for sub in subs)
            else:  # any character, a class of all but one, a back-reference: unsure
                return True
            if any(self.may_start_blank(sub) for sub in subs):
                return True
            if not may_be_empty:
                return False
        return True  # the whole may be empty: what comes after it is unknown here
