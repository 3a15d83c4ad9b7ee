"""The one normalised text every recogniser reads (DESIGN ruling 22).

A case number typed in fullwidth digits, with a zero-width space or a soft hyphen inside, with a
Cyrillic "С" for the Latin "C", or broken over two lines, still names the case to the person who
reads it, so it must name it to casegate too. `fold` turns text into the form the recognisers
search:

* Unicode NFKC: fullwidth and mathematical letters and digits, ligatures, superscripts and the
  compatibility spaces become their plain forms;
* format and invisible characters are removed: zero-width spaces and joiners, the soft hyphen,
  bidirectional controls, variation selectors, tag characters, C0 controls other than tab and
  line breaks;
* letters and digits of other scripts that look like Latin ones (Unicode's confusables, from
  confusable-homoglyphs) become the Latin letter or ASCII digit, and decimal digits of every
  script become ASCII digits;
* every kind of space becomes " ", every line or paragraph separator "\\n", every dash "-",
  and the typographic quotes Outlook writes (‘ ’ “ ”) the ASCII ones (' "): the case matcher
  reads apostrophes alike already, and most mail's text is then held one byte a character,
  not two (Python keeps a string with one character past U+00FF at two bytes each).

`joined` then removes the line breaks inside tokens of folded text, for the identifier
searches: a token broken over two lines is whole again there. Searching both the
folded and the joined text means a line break can neither hide an identifier nor, by gluing two
lines, hide one that ends a line.

Normalisation is only for deciding: what is delivered is always the original message. Pure
functions; the confusables table is built on first use from the package's data.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Iterator

from confusable_homoglyphs import confusables

from policies import scan

# ASCII: tab and the vertical blanks become a space, a carriage return a line break, and the
# other C0 controls and DEL are removed. str.translate runs at C speed on ASCII text.
_ASCII_DELETE = bytes([*range(0x00, 0x09), *range(0x0E, 0x20), 0x7F])
_ASCII_STR_TABLE = {**dict.fromkeys(_ASCII_DELETE), **{byte: chr(to) for byte, to in zip(
    b"\t\x0b\x0c\r", b"   \n", strict=True)}}
_ASCII_CRLF_TABLE = {**_ASCII_STR_TABLE, ord("\r"): None}  # text whose every CR ends a CRLF

# Removed outright besides Unicode category Cf: variation selectors, the combining grapheme
# joiner and the Hangul fillers, which render as nothing.
_INVISIBLE_EXTRA = (
    [*range(0xFE00, 0xFE10), *range(0xE0100, 0xE01F0), 0x034F, 0x115F, 0x1160, 0x3164, 0xFFA0,
     0x17B4, 0x17B5]
)
_LINE_SEPARATORS = (0x0085, 0x2028, 0x2029)
_EXTRA_DASHES = (0x2212, 0x2043, 0xFE63, 0xFF0D)  # minus sign, hyphen bullet, small/fullwidth
_QUOTES = {0x2018: "'", 0x2019: "'", 0x201C: '"', 0x201D: '"'}


@functools.cache
def _table() -> dict[int, str]:
    """The translation of every non-ASCII character `fold` changes."""
    table: dict[int, str] = {}
    for code in range(0x80, 0x30000):
        char = chr(code)
        category = unicodedata.category(char)
        if category == "Cf":
            table[code] = ""
        elif category == "Zs":
            table[code] = " "
        elif category == "Pd":
            table[code] = "-"
        elif category == "Nd":
            table[code] = str(unicodedata.digit(char))
    table.update(dict.fromkeys([*_INVISIBLE_EXTRA, *range(0xE0000, 0xE0080)], ""))
    table.update(dict.fromkeys(_LINE_SEPARATORS, "\n"))
    table.update(dict.fromkeys(_EXTRA_DASHES, "-"))
    table.update(_QUOTES)
    for code, latin in _confusable_latin().items():
        table.setdefault(code, latin)
    return table


def _confusable_latin() -> dict[int, str]:
    """Non-ASCII characters that look like one ASCII letter or digit, and that character.

    A character confusable with both a letter and a digit (Cyrillic "О": "O" and "0") becomes
    the digit only when its own name says it is one.
    """
    found: dict[int, str] = {}
    for latin, lookalikes in confusables.confusables_data.items():
        if len(latin) != 1 or not latin.isascii() or not latin.isalnum():
            continue
        for entry in lookalikes:
            char = entry["c"]
            if len(char) != 1 or char.isascii():
                continue
            is_digit_name = "DIGIT" in entry.get("n", "")
            if latin.isdigit() != is_digit_name and ord(char) in found:
                continue
            if latin.isdigit() and not is_digit_name:
                found.setdefault(ord(char), latin)
            else:
                found[ord(char)] = latin
    return found


def fold(text: str) -> str:
    """The text as the recognisers read it (see the module's docstring). Not lower-cased."""
    return "".join(fold_parts(text))  # (one part: that part itself, not a copy)


# The longest ASCII text whose CRs are deleted from its bytes (`fold_parts`), which holds one
# more copy of it for a moment: at most 64 KiB, well within the fixed overhead the gateway is
# allowed for a message (tests/test_message_memory.py, SLACK: 1 MiB). A longer text takes
# str.replace, which holds no copy beside the text and the result.
_BYTES_FOLD_MAX = 1 << 16


def fold_parts(text: str) -> list[str]:
    """`fold` of the text, as parts that, joined, are the folded text: ASCII text in one part,
    text with other characters a slice of lines at a time. A caller that lets the text go
    before joining them never holds it, its folded parts and the folded text at once (a long
    body with a tab and an accented letter on every line held 3.87x its size, beside it, to
    fold it whole; Unicode normalisation of a slice is its part of the whole's, since a line
    break neither combines nor reorders with what is around it)."""
    if not text.isascii():
        return [_fold_other(text[start:end]) for start, end in line_slices(text, _FOLD_SLICE)]
    if "\r" in text:
        data = text.encode("ascii")
        lone_cr, controls = scan.lone_cr_and_controls(data)
        if not (lone_cr or controls) and len(data) <= _BYTES_FOLD_MAX:
            # Every CR ends a CRLF, deleted from the bytes and then decoded: half the time of
            # str.replace (50 KB of a letter full of digits: 10 against 21 us), for one more
            # copy of a short text.
            data = data.replace(b"\r", b"")
            return [data.decode("ascii")]
        del data
        if not lone_cr:
            # Every CR ends a CRLF: deleting them all is a third of the time of replacing each
            # CRLF (and holds one copy of the text, as that does); with the other controls,
            # in the same pass (a tab on every line: 2x the text beside it, not 4x).
            return [text.translate(_ASCII_CRLF_TABLE) if controls else text.replace("\r", "")]
        text = text.replace("\r\n", "\n")
    if not _holds_any(text, _ASCII_ODD_BYTES):
        return [text]
    # str.translate maps ASCII to ASCII at C speed, into one new string (the bytes'
    # translate took twice the time and held two more copies)
    return [text.translate(_ASCII_STR_TABLE)]


def folded_parts(pieces: Iterable[str]) -> list[str]:
    """`fold_parts` of the pieces' text, one after another (a body as it is decoded, a slice
    at a time), folded a slice of whole lines at a time as they come: joined, the parts are
    `fold` of the text joined, and the text is never whole before it is folded (a body of
    two-byte characters, decoded whole, was twice its bytes beside them)."""
    parts: list[str] = []
    line: list[str] = []  # the pieces since the last line break
    for piece in pieces:
        cut = piece.rfind("\n") + 1
        if not cut:
            line.append(piece)
            continue
        parts += fold_parts("".join([*line, piece[:cut]]))
        line = [piece[cut:]]
    parts += fold_parts("".join(line))
    return parts


_FOLD_SLICE = 1 << 18  # characters of non-ASCII text folded at a time (then to a line's end)


def line_slices(text: str, size: int) -> Iterator[tuple[int, int]]:
    """(start, end) of slices of about `size` characters, each ending after a line break (the
    last at the text's end): what is read a character or a combining sequence at a time
    (Unicode normalisation, case folding) reads each slice as its part of the whole."""
    start = 0
    while start < len(text):
        end = text.find("\n", start + size - 1)
        end = len(text) if end == -1 else end + 1
        yield start, end
        start = end


def _fold_other(text: str) -> str:
    """`fold` of text with a character other than ASCII. What it holds (the characters to
    change, tabs, other controls) is found at C speed, since a regex or a set walks each
    character of such a text in the interpreter (a curly apostrophe and a dash on every line
    were classified at 25 MB/s)."""
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    text = unicodedata.normalize("NFKC", text)
    tabs = "\t" in text
    controls = _holds_any(text, _CONTROL_BYTES)
    table = _table()
    changed = sorted(char for char in scan.other_characters(text) if ord(char) in table)
    if len(changed) <= _REPLACED_ONE_BY_ONE:  # each a str.replace: C speed
        for char in changed:
            text = text.replace(char, table[ord(char)])
    else:  # runs of them, each translated
        pattern = re.compile("[" + "".join(re.escape(char) for char in changed) + "]+")
        text = pattern.sub(lambda match: match.group().translate(table), text)
    if tabs:  # a pasted table (translate reads a dict for each character of such a text)
        text = text.replace("\t", " ")
    if controls:
        text = text.translate(_ASCII_STR_TABLE)
    return text


# A text with at most this many distinct characters to change has each replaced in turn (the
# changes are ASCII, so no replacement makes another); with more, one regex finds them all.
_REPLACED_ONE_BY_ONE = 8


def _holds_any(text: str, wanted: bytes) -> bool:
    """Whether the text holds one of the ASCII characters `wanted`, at C speed: a slice at a
    time is encoded and those bytes deleted (bytes.translate); a shorter result held one (no
    other character's UTF-8 bytes are ASCII). (A regex tries every position in the
    interpreter's engine: about 20 ms for 2 MB of ASCII text, more for other text.)"""
    return any(len(chunk.translate(None, wanted)) != len(chunk)
               for chunk in scan.utf8_slices(text))


# C0 controls but LF, and DEL: what `fold` changes in ASCII text; and those but tab
_ASCII_ODD_BYTES = bytes([*range(0x00, 0x0A), *range(0x0B, 0x20), 0x7F])
_CONTROL_BYTES = _ASCII_ODD_BYTES.replace(b"\t", b"")



def joined(folded: str) -> str:
    """Folded text with the line breaks inside tokens removed: a break with no blank beside it
    joins the two lines, one with blanks beside it becomes a single space."""
    if "\n" not in folded:
        return folded
    if " \n" not in folded and "\n " not in folded:
        return folded.replace("\n", "")  # the usual case, at C speed
    return scan.join_runs(folded)  # (folded text has no tabs)


# A quoted line of a plain-text reply: "> ", nested ("> > ", ">>") or indented (folded text has
# no tabs), then the line itself; found from the line break before it (a literal: the regex
# engine skips to each), the first line of a text alone.
_QUOTED_LINE = re.compile(r"\n *(?:> ?)+([^\n]*)")
_QUOTED_FIRST_LINE = re.compile(r" *(?:> ?)+([^\n]*)")


def quoted(folded: str) -> str:
    """The quoted lines of a folded text, their quote marks removed, one line after another
    ("" when it has none). A mail client that wraps a quoted line starts the new line with the
    marks again, so an identifier wrapped there ("> NHS 943 476" / "> 5919") is whole in
    neither the text nor its joined view; it is in this text, or in its joined view. A line
    break stands between two blocks of quoted lines, as between lines."""
    if ">" not in folded:
        return ""  # at C speed: most texts
    first = _QUOTED_FIRST_LINE.match(folded)
    lines = _QUOTED_LINE.findall(folded)  # each line's text, at C speed
    return "\n".join([first.group(1), *lines] if first is not None else lines)


def quoted_windows(folded: str, size: int, overlap: int) -> Iterator[str]:
    """`quoted(folded)` a window at a time, so that a long reply's quoted text is never whole
    in memory (issue 14, point 4): each window holds the quoted lines of a stretch of about
    `size` characters of the text (whole lines: it ends at the first line break `size` or more
    characters after its start), without their marks and one after another as `quoted` has
    them, after the fewest last lines of the windows before it that hold at least `overlap`
    characters that are neither a blank nor a line break (all of them, when they hold fewer;
    the last, when `overlap` is 0). So every window is a run of whole lines of
    `quoted(folded)`, and a match that holds at most `overlap` such characters and ends in a
    window's own lines lies whole in that window; the joined view only removes or collapses
    blanks and line breaks, so likewise in it. A text without a quoted line gives nothing; one
    of at most `size` characters in at most `size // 64` lines, one window: `quoted(folded)`.
    """
    if ">" not in folded:
        return  # at C speed: most texts
    tail: str | None = None  # the end of the windows so far, whole lines
    start = 0
    while start < len(folded):
        end = _stretch_end(folded, start, size, len(tail or ""))
        lines = _QUOTED_LINE.findall(folded, start, end)  # each line's text, at C speed
        first = _QUOTED_FIRST_LINE.match(folded, 0, end) if start == 0 else None
        start = end
        if first is not None:
            lines.insert(0, first.group(1))
        if not lines:
            continue
        if tail is not None:
            lines.insert(0, tail)
        window = "\n".join(lines)
        del lines
        yield window
        tail = window[_tail_start(window, overlap):]


def text_windows(folded: str, size: int, overlap: int) -> Iterator[str]:
    """The text a window at a time, as `quoted_windows` gives the quoted lines, for its joined
    view (`joined`) to be read a window at a time: each window is a run of whole lines of the
    text, its own from where the window before it ended to the first line break `size` or more
    characters on (or as far on as it repeats, at least: a long run of blank lines is not read
    a window for every few lines of it), after the fewest last lines before it that hold at
    least `overlap` characters that are neither a blank nor a line break (all of them, when
    they hold fewer). A match of the joined view that holds at most `overlap` such characters
    and ends in a window's own lines lies whole in that window's joined view; a window can
    find more than the whole view only where it is cut from the text around it. A text of at
    most `size` characters is one window, the text itself."""
    if len(folded) <= size:
        yield folded
        return
    start = repeat = 0
    while start < len(folded):
        end = _line_break_from(folded, start + max(size, start - repeat, 1))
        yield folded[repeat:end]
        start, repeat = end, _tail_start(folded, overlap, end)


def _stretch_end(text: str, start: int, size: int, repeated: int) -> int:
    """Where the stretch of whole lines of `text` from `start` ends (so that `_QUOTED_LINE`
    finds its lines from the line break before each): at the first line break `size` or more
    characters on; or before, so that it holds at most `size // 64` lines (a line found is an
    object of its own, about 60 bytes besides its text: in a stretch of short lines those would
    be many times its size), but not before `repeated` characters on, the length of what its
    window repeats of the windows before it. (The repeat holds at least `overlap` characters
    that are not blanks: after a long run of blank lines, all of it; a window for every few
    lines of it would read the run again and again.)"""
    most_lines = max(size // 64, 1)
    reach = max(size, 1)
    end = _line_break_from(text, start + reach)
    while reach > repeated and (lines := text.count("\n", start + 1, end) + 1) > most_lines:
        reach = max(reach * most_lines // lines, repeated, 1)  # smaller: lines > most_lines
        end = _line_break_from(text, start + reach)
    return end


def _line_break_from(text: str, at: int) -> int:
    """The first line break at or after `at`, or the text's end."""
    found = text.find("\n", at)
    return len(text) if found < 0 else found


def _tail_start(text: str, overlap: int, end: int | None = None) -> int:
    """The start of the last line of `text[:end]` (all of it when `end` is None) from which
    to `end` it holds at least `overlap` characters that are neither a blank nor a line break
    (0: it holds fewer). Counted a slice of `overlap` characters at a time from `end`, at C
    speed, then halving the slice where the count is reached (each count at C speed: not a
    line at a time)."""
    end, found = len(text) if end is None else end, 0
    while True:
        if end == 0:
            return 0
        start = max(0, end - max(overlap, 1))
        if found + _blank_free(text[start:end]) >= overlap:
            break
        found += _blank_free(text[start:end])
        end = start
    # The last place in the slice from which the count is reached, then its line's start.
    low, high = start, end
    while low < high:
        middle = (low + high + 1) // 2
        if found + _blank_free(text[middle:end]) >= overlap:
            low = middle
        else:
            high = middle - 1
    return text.rfind("\n", 0, low) + 1


def _blank_free(text: str) -> int:
    """How many characters of `text` are neither a blank nor a line break."""
    return len(text) - text.count(" ") - text.count("\n")
