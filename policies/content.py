"""Message classification: from raw bytes to `MessageFacts`, pure and bounded.

The message is parsed once with the stdlib (policy.default; see policies.email_policy). Every
MIME part is read: text and HTML bodies as text, attachments by their real type
(policies.filetypes) with their text extracted within budget (policies.extract); archives,
attached messages and embedded objects are opened and what they hold is read as if attached
(policies.containers; DESIGN ruling 22). The text is
searched for case numbers and personal identifiers (policies.identifiers) and for the cues of an
information type; the headers are read for an explicit classification, protective markings,
auto-forwarding and overrides (policies.header_signals). Anything that cannot be read, or is
structurally wrong, makes the message protected (DESIGN ruling 2). No input bytes make this
raise, except empty input.
"""

from __future__ import annotations

import binascii
import codecs
import email
import email.feedparser
import email.parser
import email.policy
import functools
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from email.message import EmailMessage, Message

from policies import (
    containers,
    email_policy,
    extract,
    family,
    filetypes,
    header_signals,
    identifiers,
    mime,
    normalise,
    restricted,
    scan,
)
from policies.cases import CaseIndex, CaseMatches
from policies.content_rules import (
    ContentRules,
    HeaderSignal,
    InformationTypeCues,
    Limits,
    Markings,
)
from policies.errors import MessageError, TakesLonger
from policies.model import Attachment, MessageFacts

__all__ = [
    "ContentRules",
    "HeaderSignal",
    "InformationTypeCues",
    "Limits",
    "Markings",
    "classify_message",
    "warm",
]

Clock = Callable[[], float]
GENERAL = "general"

# protected_reasons, always in this order.
CASE_NUMBER = "case-number"
CASE_PERSON = "case-person"  # a recorded person of a case is named (DESIGN ruling 17)
CONFIDENTIAL_DETAIL = "confidential-detail"  # a recorded confidential detail (ruling 18)
LABEL = "label"
CASE_DOCUMENT = "case-document"
UNREADABLE_ATTACHMENT = "unreadable-attachment"
MALFORMED = "malformed"
_REASON_ORDER = (CASE_NUMBER, CASE_PERSON, CONFIDENTIAL_DETAIL, LABEL, CASE_DOCUMENT,
                 identifiers.DATE_OF_BIRTH,
                 identifiers.NHS_NUMBER, identifiers.NI_NUMBER, identifiers.PNC_ID,
                 UNREADABLE_ATTACHMENT, MALFORMED)
_IDENTIFIER_ORDER = (identifiers.DATE_OF_BIRTH, identifiers.NHS_NUMBER, identifiers.NI_NUMBER,
                     identifiers.PNC_ID)


class _Source:
    """Where a piece of text came from; it decides which cues apply and the reason given."""

    SUBJECT = "subject"
    BODY = "body"
    ATTACHMENT_NAME = "attachment-name"
    ATTACHMENT_TEXT = "attachment-text"


@dataclass(frozen=True)
class _Text:
    source: str
    text: str
    author: str = ""  # the From of the attached message it is in; "" if none (restricted.py)
    folded: bool = False  # folded as it was read (`normalise.folded_parts`)


@dataclass
class _Reading:
    """What has been read of one message so far."""

    texts: list[_Text] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    malformed: list[str] = field(default_factory=list)


def classify_message(raw: bytes, rules: ContentRules, clock: Clock,
                     cases: CaseIndex = CaseIndex.EMPTY, *, quick: bool = False) -> MessageFacts:
    """Classify one message. Raises MessageError only for empty input; never otherwise, but
    for `quick` (below).

    `cases` is the case registry's index (Snapshot.cases): its people and confidential details
    are looked for in the same texts as every other recogniser reads. `quick` asks for a
    reading that takes no time beyond the text's own length: TakesLonger is raised, before
    any of it is read, by a file that would need a reader of its own (a PDF, an Office
    document, an archive, an attached message; see `_QUICK_KINDS`).
    """
    if not raw:
        raise MessageError("the message is empty")
    try:
        return _classify(raw, rules, clock, cases=cases, quick=quick)
    except TakesLonger:
        raise
    except Exception:
        # The stdlib parser and header registry have raised on hostile input before; whatever
        # happens, the answer is a protected, malformed message (fail closed).
        return _unparseable(raw)


def warm(rules: ContentRules) -> None:
    """Build everything the first classification with `rules` would build on first use (the
    scan engine's database: 0.3-0.8 s of Hyperscan compiling), so that no message pays it.
    Called when the gateway loads its policy; deterministic and pure (no I/O)."""
    patterns = _identifier_patterns(rules)
    # The databases `_facts` uses: text without a digit, with one, its joined view; dates.
    identifiers.scan_text("warm", patterns, _gates(rules))
    identifiers.scan_text("warm 1", patterns, _gates(rules), patterns)
    identifiers.scan_text("warm 1", patterns)
    identifiers.scan_text("warm 1", (), _DATE_GATE)
    identifiers.warm_dates()  # where the registry's matcher tries dates
    scan.warm_line_ends()  # and the line-end checks' (policies/mime.py, normalise.py)


def _classify(raw: bytes, rules: ContentRules, clock: Clock, *,
              single_part: bool = True, cases: CaseIndex = CaseIndex.EMPTY,
              skeleton: bool = True, quick: bool = False) -> MessageFacts:
    """`single_part=False` turns the single-part path off, `skeleton=False` the parse from the
    message's skeleton (policies.mime.parse_skeleton): tests compare the paths."""
    reading = _Reading()
    if len(raw) > rules.limits.max_message_bytes:
        message: Message = email.parser.BytesParser(
            policy=email_policy.for_one_message()).parsebytes(raw, headersonly=True)
        reading.malformed.append("too-large")
    elif single_part and (body := _single_text_part(raw)) is not None:
        message = body.message
        read = _BodyRead.of(message, body)
        del body  # its view of the message's bytes
        reading.texts.extend(read.texts())
    else:
        deferred: dict[Message, mime.Body] = {}  # bodies read from `raw` as they are reached
        message = (_parse(raw, deferred) if skeleton
                   else _parse_whole(raw, email_policy.for_one_message()))
        if isinstance(message, EmailMessage):
            _read_parts(message, rules, clock, reading, quick, deferred)
    if not isinstance(message, EmailMessage):  # policy.default always builds EmailMessage
        return _unparseable(raw)
    return _facts(message, raw, rules, reading, cases)


_FEED_BYTES = 65536


def _parse(raw: bytes, deferred: dict[Message, mime.Body] | None = None) -> Message:
    """The stdlib parse of `raw`: from its skeleton when the message allows (policies.mime:
    the same tree, headers, defects and bodies, found without feeding the parser every body
    line), else fed in slices of bytes. With `deferred`, the bodies the skeleton's parse
    leaves in `raw` (`mime.parse_skeleton`) are put there, each to be read by
    `mime.decoded_payload` when its part is.

    The same parser `BytesParser.parsebytes` drives, but without its copy of the whole message
    as a str in a StringIO (four bytes a character): the parse peaks near 3x the message, not 8x.
    """
    policy = email_policy.for_one_message()
    fast = mime.parse_skeleton(raw, policy, deferred=deferred)
    if fast is not None:
        return fast
    return _parse_whole(raw, policy)


def _parse_whole(raw: bytes, policy: email.policy.EmailPolicy[EmailMessage]) -> Message:
    """The stdlib parse of every line of `raw` (tests compare it with `_parse`)."""
    parser = email.feedparser.BytesFeedParser(policy=policy)
    with memoryview(raw) as view:
        for start in range(0, len(raw), _FEED_BYTES):
            parser.feed(bytes(view[start:start + _FEED_BYTES]))
    return parser.close()


@dataclass(frozen=True)
class _SinglePart:
    """A message whose whole content is one text body, and that body."""

    message: EmailMessage  # the headers; the stdlib parse of the message minus its body
    body: memoryview  # the body as sent, in the message's bytes
    quoted_printable: bool  # else 7bit, 8bit or binary: the body is its content as it is

    @property
    def data(self) -> bytes | memoryview:
        """The body after its transfer encoding is undone (a2b_qp: what quopri.decodestring
        calls)."""
        return binascii.a2b_qp(self.body) if self.quoted_printable else self.body

    def slices(self) -> Iterator[bytes | memoryview]:
        """`data` a slice at a time (`extract.HTML_PIECE` bytes or so): a quoted-printable
        body is decoded a slice of whole lines at a time (an encoded line, soft line break
        and all, decodes alone), so that it is never whole in memory decoded."""
        if not self.quoted_printable:
            yield from extract.byte_slices(self.body)
            return
        body, start = self.body, 0
        while start < len(body):
            cut = bytes(body[start + extract.HTML_PIECE:start + extract.HTML_PIECE + _QP_LINE])
            end = cut.find(b"\n")
            end = len(body) if end == -1 else start + extract.HTML_PIECE + end + 1
            yield binascii.a2b_qp(body[start:end])
            start = end


_QP_LINE = 1024  # bytes looked through for a line's end past a slice (RFC 2045: 76 a line)


# Transfer encodings the single-part path undoes itself, as `Message.get_payload(decode=True)`
# does; anything else (base64, uuencode, unknown) goes through the stdlib's own decoding.
_PLAIN_ENCODINGS = frozenset({"", "7bit", "8bit", "binary"})


def _single_text_part(raw: bytes) -> _SinglePart | None:
    """A text/plain or text/html message that is not multipart, read without parsing its body.

    Most mail is such a message, and for it the stdlib parser does nothing but split the body
    into lines and join them again (about three times the body in memory, and most of the time
    of a large message). The header block (up to the first empty line, CRLF throughout) is
    parsed by the stdlib alone; the body is the bytes after it. The answer is the same as the
    full parse's, which the tests check on generated and hostile messages: anything the header
    parse finds odd (a defect, a line that is not a header, a multipart or message/* type, a
    body that the stdlib would decode with defects) returns None and takes the full parse.
    """
    end = raw.find(b"\r\n\r\n")
    if end == -1 or raw.startswith(b"\r\n"):
        return None
    head = raw[: end + 4]
    if head.count(b"\n") != head.count(b"\r\n") or head.count(b"\r") != head.count(b"\r\n"):
        return None  # bare CR or LF: the stdlib would find the header block's end elsewhere
    message = _header_block(head)
    if (message is None or message.get_content_maintype() in ("multipart", "message")
            or not _is_body(message)):
        return None
    body = memoryview(raw)[end + 4:]
    # The same expression `Message.get_payload(decode=True)` uses to choose the decoding.
    encoding = str(message.get("content-transfer-encoding", "")).lower()
    if encoding.strip() in _PLAIN_ENCODINGS and encoding == encoding.strip():
        return _SinglePart(message, body, quoted_printable=False)
    if encoding == "quoted-printable":
        return _SinglePart(message, body, quoted_printable=True)
    return None


# A header field's first line: its name (printable ASCII but the colon) and the colon.
_FIELD_START = re.compile(r"[\x21-\x39\x3b-\x7e]+:")


def _header_block(head: bytes) -> EmailMessage | None:
    """The header block (CRLF throughout, ending in its empty line) as the stdlib's parser
    stores it, or None for anything it would treat specially or record a defect for: a line
    that starts no field and continues none, a continuation first, an mbox "From " line.

    Each field is kept raw, as `email.feedparser` keeps it (`set_raw` of the policy's
    `header_source_parse` of its lines), so reading a header later parses it just as after
    the stdlib's parse; only the line-by-line machinery is left out (most of the cost of
    classifying a short message).
    """
    policy = email_policy.for_one_message()
    message = EmailMessage(policy=policy)
    current: list[str] = []
    for line in head.decode("ascii", "surrogateescape").split("\r\n")[:-2]:
        if line[:1] in (" ", "\t"):
            if not current:
                return None
            current.append(line + "\r\n")
            continue
        if not _FIELD_START.match(line):
            return None
        if current:
            message.set_raw(*policy.header_source_parse(current))
        current = [line + "\r\n"]
    if current:
        message.set_raw(*policy.header_source_parse(current))
    return message


def _unparseable(raw: bytes) -> MessageFacts:
    return MessageFacts(
        information_type=GENERAL, protected=True, protected_reasons=(MALFORMED,),
        case_numbers=(), identifiers=(), attachments=(), labels=(), auto_forwarded=False,
        overrides=(), sender_display_name="", size=len(raw), malformed=("unparseable",),
    )


# --- reading the parts ---------------------------------------------------------------------

def _read_parts(message: EmailMessage, rules: ContentRules, clock: Clock,
                reading: _Reading, quick: bool = False,
                deferred: dict[Message, mime.Body] | None = None) -> None:
    not_after = clock() + rules.limits.message_seconds
    _Reader(rules, clock, reading, containers.Budget(rules.limits, clock), quick,
            {} if deferred is None else deferred).message(message, 0, not_after)


def _is_body(part: EmailMessage) -> bool:
    return (part.get_content_type() in ("text/plain", "text/html")
            and part.get_content_disposition() != "attachment"
            and not part.get_filename())


@dataclass
class _BodyRead:
    """A body part read from its decoded bytes: a plain text (ASCII: decoded whole, at C
    speed; other text decoded and folded a slice at a time, `normalise.folded_parts`, since
    decoded whole it may take two or four bytes a character), or an HTML body's text (folded
    likewise) and tags, taken out a piece at a time (`extract.html_text_and_tags`). The
    caller lets go of the bytes before `texts` joins the pieces, so that neither the markup
    nor the text unfolded is ever whole in memory, and the bytes are not held beside the
    joined text."""

    pieces: extract.TextPieces  # the text (folded when `folded`), and an HTML body's tags
    html: bool
    folded: bool

    @classmethod
    def of(cls, part: EmailMessage, data: bytes | memoryview | _SinglePart) -> _BodyRead:
        encoding = part.get_content_charset() or "utf-8"
        slices = data.slices() if isinstance(data, _SinglePart) else extract.byte_slices(data)
        if part.get_content_type() == "text/html":
            return cls(extract.html_text_and_tags(slices, encoding, keep=normalise.folded_parts),
                       html=True, folded=True)
        ascii_text = _ascii_text(data, encoding)
        if ascii_text is not None:  # folded with the other texts, at C speed
            return cls(extract.TextPieces([ascii_text], []), html=False, folded=False)
        text = normalise.folded_parts(extract.decoded_pieces(slices, encoding))
        return cls(extract.TextPieces(text, []), html=False, folded=True)

    def texts(self) -> list[_Text]:
        """The body's texts (HTML: its text, then its tags: attribute values and the like
        leave too), each piece let go once joined."""
        text, tags = self.pieces.joined()
        body = _Text(_Source.BODY, text, folded=self.folded)
        return [body, _Text(_Source.BODY, tags)] if self.html else [body]


def _ascii_text(data: bytes | memoryview | _SinglePart, encoding: str) -> str | None:
    """The body's text when its bytes (not quoted-printable) are ASCII in a charset that
    reads ASCII as ASCII; else None."""
    if isinstance(data, _SinglePart):
        if data.quoted_printable:
            return None
        data = data.body
    if not _reads_ascii_as_ascii(encoding):
        return None
    try:
        return str(data, "ascii")
    except UnicodeDecodeError:
        return None


@functools.lru_cache(maxsize=64)
def _reads_ascii_as_ascii(encoding: str) -> bool:
    """Whether a charset reads ASCII bytes as the ASCII characters (an unknown one is read as
    UTF-8, which does)."""
    try:
        return codecs.lookup(encoding).name in _ASCII_CHARSETS
    except LookupError:
        return True


# Charsets (as `codecs.lookup` names them) in which ASCII bytes are the ASCII characters.
_ASCII_CHARSETS = frozenset({"ascii", "utf-8", "iso8859-1", "cp1252", "iso8859-15"})


def _inline(part: EmailMessage) -> bool:
    """A part the HTML body shows by its Content-ID (not offered as an attachment)."""
    return part.get("Content-ID") is not None and part.get_content_disposition() != "attachment"


# What a quick reading reads (`classify_message`'s `quick`): files read in one pass over their
# own bytes (an image is not read at all, nor a file of no known type).
_QUICK_KINDS = frozenset({filetypes.TEXT, filetypes.HTML, filetypes.EMPTY, filetypes.UNKNOWN})

# Containers opened by policies.containers; an .eml is read here, with the same MIME walk.
_CONTAINER_READERS = {
    filetypes.ZIP: containers.zip_members,
    filetypes.MSG: containers.msg_members,
    filetypes.OLE_PACKAGE: containers.ole_package_members,
}


@dataclass
class _Reader:
    """Reads a message's parts and attachments into `reading`, opening the containers among
    them (DESIGN ruling 22): what a container holds is read as if attached to the message,
    one level deeper, within the containers' budget."""

    rules: ContentRules
    clock: Clock
    reading: _Reading
    budget: containers.Budget
    quick: bool = False  # raise TakesLonger at a file that needs a reader of its own
    # Bodies the parse left in the message's bytes, by part (`_parse`): each read once, here.
    deferred: dict[Message, mime.Body] = field(default_factory=dict)

    def message(self, message: EmailMessage, depth: int, deadline: float,
                author: str = "") -> None:
        """The parts of the message itself (depth 0), or of a message attached as a file whose
        own attachments lie at `depth`. In an attached message, broken structure makes it
        unopened (damaged); in the message itself, malformed (policies.mime). Each text keeps
        its author: `author` (the From of an attached message, "" for the sender's own), or the
        From of the forwarded message/rfc822 part it lies in (policies/restricted.py)."""
        tree = mime.walk(message, self.rules.limits, depth)
        if depth and tree.malformed:
            raise containers.Unopened(containers.DAMAGED)
        self.reading.malformed.extend(tree.malformed)
        if tree.too_deep_messages:
            if depth:
                raise containers.Unopened(containers.DEPTH)
            self.reading.attachments.append(Attachment(
                declared_type="message/rfc822", detected_type=filetypes.EML, size=0,
                readable=False, editable=False,
                depth=self.rules.limits.max_container_depth + 1, unopened=containers.DEPTH))
        authors = restricted.part_authors(message, self.rules.limits.max_parts,
                                          self.rules.limits.max_depth) if tree.forwarded else {}
        for inner in tree.forwarded:
            self.reading.texts.append(_Text(_Source.BODY, str(inner.get("Subject", "")),
                                            authors.get(id(inner), author)))
        for leaf in tree.leaves:
            part = leaf.part
            part_author = authors.get(id(part), author)
            payload = mime.decoded_payload(part, self.deferred.pop(part, None))
            defects = mime.defect_codes(part)  # decoding records base64 defects
            part.set_payload("")  # read once: only the headers are needed from here on (memory)
            data = payload if isinstance(payload, bytes) else b""
            if payload is None or not isinstance(payload, bytes):
                defects.append("undecodable-part")
            if depth and defects:
                raise containers.Unopened(containers.DAMAGED)
            self.reading.malformed.extend(defects)
            if _is_body(part):
                read = _BodyRead.of(part, data)
                del payload, data  # the decoded bytes: let go before the text is joined
                texts = [replace(t, author=part_author) for t in read.texts()]
                if depth:
                    self.budget.take_text(sum(len(t.text) for t in texts))
                self.reading.texts.extend(texts)
                continue
            name = part.get_filename() or ""
            if depth:
                self.budget.admit(containers.Member(name, data, leaf.depth))
                self.budget.check_time(deadline)
            self.file(name, part.get_content_type(), data, leaf.depth, deadline,
                      inline=_inline(part), author=part_author)

    def file(self, name: str, declared_type: str, data: bytes, depth: int, deadline: float,
             *, inline: bool = False, author: str = "") -> None:
        """Classify one file: attached to the message (depth 0) or found in a container. Its
        Attachment comes before those of the files it holds."""
        limits = self.rules.limits
        kind = filetypes.detect_type(data, name)
        if self.quick and kind not in _QUICK_KINDS and not filetypes.is_image(kind):
            raise TakesLonger(kind)
        at = len(self.reading.attachments)
        if name:
            self.reading.texts.append(_Text(_Source.ATTACHMENT_NAME, name, author))
        readable, encrypted, unopened = True, False, ""
        try:
            if kind == filetypes.EML:
                self.eml(data, depth, self.inner_deadline(depth, deadline))
            elif kind in _CONTAINER_READERS:
                inner_deadline = self.inner_deadline(depth, deadline)
                self.members(_CONTAINER_READERS[kind](data, depth, self.budget, inner_deadline),
                             inner_deadline, author)
            elif filetypes.is_unopenable_archive(kind):
                raise containers.Unopened(containers.UNSUPPORTED)
            else:
                decorative = (inline and filetypes.is_image(kind)
                              and len(data) <= self.rules.decorative_image_bytes)
                extraction = extract.extract_text(
                    kind, data, limits, self.clock,
                    images_are_unreadable=self.rules.images_are_unreadable and not decorative,
                    not_after=deadline)
                readable, encrypted = extraction.readable, extraction.encrypted
                unopened = containers.ENCRYPTED if encrypted else extraction.unopened
                if extraction.text:
                    if depth:
                        self.budget.take_text(len(extraction.text))
                    self.reading.texts.append(_Text(_Source.ATTACHMENT_TEXT, extraction.text,
                                                    author))
                if extraction.embedded:
                    self.members([containers.Member(inner, content, depth + 1)
                                  for inner, content in extraction.embedded],
                                 self.inner_deadline(depth, deadline), author)
        except containers.Unopened as exc:
            readable, unopened = False, exc.reason
            encrypted = encrypted or exc.reason == containers.ENCRYPTED
        self.reading.attachments.insert(at, Attachment(
            declared_type=declared_type,
            detected_type=kind,
            size=len(data),
            readable=readable,
            editable=kind in self.rules.editable_types,
            encrypted=encrypted,
            depth=depth,
            unopened=unopened,
        ))

    def inner_deadline(self, depth: int, deadline: float) -> float:
        """Everything inside one attached container shares its deadline."""
        if depth:
            return deadline
        return min(self.clock() + self.rules.limits.container_seconds, deadline)

    def members(self, items: Iterable[containers.Member | containers.Text],
                deadline: float, author: str = "") -> None:
        """Read what a container holds: its own text, and each file as an attachment."""
        for item in items:
            if isinstance(item, containers.Text):
                self.budget.take_text(len(item.text))
                self.reading.texts.append(_Text(_Source.BODY, item.text, author))
                continue
            self.budget.admit(item)
            self.file(item.name, item.declared_type, item.data, item.depth, deadline,
                      author=author)
        self.budget.check_time(deadline)

    def eml(self, data: bytes, depth: int, deadline: float) -> None:
        """An RFC 5322 message attached as a file: read like the message itself, one deeper."""
        self.budget.enter(depth + 1)
        message = _parse(data, self.deferred)
        if not isinstance(message, EmailMessage):
            raise containers.Unopened(containers.DAMAGED)
        author = restricted.message_author(message)  # who wrote the attached .eml
        self.reading.texts.append(_Text(_Source.BODY, str(message.get("Subject", "")), author))
        self.message(message, depth + 1, deadline, author)
        self.budget.check_time(deadline)


# --- from what was read to facts --------------------------------------------------------

def _facts(message: EmailMessage, raw: bytes, rules: ContentRules,
           reading: _Reading, cases: CaseIndex) -> MessageFacts:
    headers = header_signals.Headers.of(message, rules.read_headers)
    # Every recogniser reads the normalised text (DESIGN ruling 22); what leaves is the original.
    texts = [_Text(_Source.SUBJECT, normalise.fold(" ".join(headers.get("Subject"))))]
    reading.texts.reverse()
    while reading.texts:  # each original let go once folded: a long body is not held twice
        if reading.texts[-1].folded:
            texts.append(reading.texts.pop())
            continue
        parts = normalise.fold_parts(reading.texts[-1].text)
        original = reading.texts.pop()
        source, author = original.source, original.author
        del original  # let go before the parts are joined
        texts.append(_Text(source, "".join(parts), author, folded=True))
        del parts
    malformed = list(reading.malformed)
    if headers.has_line_break():
        malformed.append("header-line-break")
    if not headers.get("From"):
        malformed.append("missing-from")
    malformed = list(dict.fromkeys(malformed))

    explicit = header_signals.explicit_classification(headers, rules)
    markings = header_signals.protective_labels(headers, rules.markings)
    # One pass of the scan engine over each text finds every identifier's candidates, the
    # information types' keywords, and which words of the agency-check phrases are in it
    # (policies/scan.py).
    gate = rules.agency_checks.gate
    scans = [_scan(t.text, rules) for t in texts]
    information_type, cue_reason = _information_type(rules, explicit.information_type, texts,
                                                     scans)
    found = restricted.scan((restricted.Unit(t.source, t.text, t.author,
                                             phrases=gate.open_among(
                                                 s.present_among(gate.words)),
                                             quotes=s.present(restricted.QUOTE_WORDS))
                             for t, s in zip(texts, scans, strict=True)),
                            rules.agency_checks, rules.legal_advice)
    information_type, restricted_reason = restricted.by_text(information_type, found.signals)
    registry = _case_matches(texts, rules, cases, headers.display_name)
    found_numbers, kinds = _identifiers(texts, rules, scans)
    del scans
    case_numbers = tuple(dict.fromkeys((*found_numbers, *registry.case_numbers)))

    reasons: set[str] = set(kinds)
    if case_numbers:
        reasons.add(CASE_NUMBER)
    if registry.people or registry.possible_cases:
        reasons.add(CASE_PERSON)
    if registry.details:
        reasons.add(CONFIDENTIAL_DETAIL)
    if markings or "classification:unknown" in explicit.labels:
        reasons.add(LABEL)
    if cue_reason:
        reasons.add(cue_reason)
    if restricted_reason:
        reasons.add(restricted_reason)
    if any(not a.readable for a in reading.attachments):
        reasons.add(UNREADABLE_ATTACHMENT)
    if malformed:
        reasons.add(MALFORMED)
    protected_reasons = tuple(r for r in _REASON_ORDER if r in reasons)
    return MessageFacts(
        information_type=information_type,
        protected=bool(protected_reasons),
        protected_reasons=protected_reasons,
        case_numbers=case_numbers,
        identifiers=tuple(k for k in _IDENTIFIER_ORDER if k in kinds),
        attachments=tuple(reading.attachments),
        labels=tuple(dict.fromkeys((*explicit.labels, *markings))),
        auto_forwarded=header_signals.is_auto_forwarded(headers, rules.auto_forward),
        overrides=header_signals.overrides(headers, rules.override_header,
                                           rules.override_subject_tag),
        sender_display_name=headers.display_name,
        size=len(raw),
        malformed=tuple(malformed),
        signals=found.signals,
        forwarded_from=found.authors,
        shown_addresses=family.shown_addresses(message),
        case_people=registry.people,
        confidential=registry.details,
        possible_cases=registry.possible_cases,
        shielded_cases=tuple(c for c in (*case_numbers, *registry.possible_cases)
                             if cases.shielded(c) is not None),
    )


def _case_matches(texts: list[_Text], rules: ContentRules, cases: CaseIndex,
                  sender_name: str) -> CaseMatches:
    """The case registry's people and confidential details in the texts (DESIGN rulings 17-18):
    every text every other recogniser reads (subject, bodies, attachment names and text, the
    subjects of attached messages), each in one pass. Dates are looked for only in the texts
    where the scan saw one (in ASCII text; other text may gain one as the matcher normalises
    it: "Mäy" is "may" there)."""
    if cases.is_empty:
        return CaseMatches.NONE
    dated = [not piece.text.isascii() or _dated(piece.text) for piece in texts]
    return cases.match((piece.text for piece in texts), dob_cues=rules.date_of_birth_regex,
                       sender_name=sender_name, dated=dated)


# The date gate has a database of its own, scanned only for the case registry. Hyperscan ends
# a scan once every pattern of its database has matched (a gate matches once), so on text with
# dates this scan stops at the first; in the shared database the date's shape (digit classes,
# no literal to skip to) was followed through every digit of every text: on digit-heavy text a
# fifth to a third of the time of the whole scan (issue 14).
_DATE_GATE = (identifiers.DATES,)


def _dated(text: str) -> bool:
    """Whether the text may hold a date (`identifiers.find_dates`)."""
    return identifiers.scan_text(text, (), _DATE_GATE).present(identifiers.DATES)


def _gates(rules: ContentRules) -> tuple[re.Pattern[str], ...]:
    """What the scan engine only says is present or not: the keywords' phrases, the words of
    the agency-check phrases, quotation cues (ContentRules.scan_gates, made once)."""
    return rules.scan_gates


def _identifier_patterns(rules: ContentRules) -> tuple[re.Pattern[str], ...]:
    """Every pattern the identifier recognisers search (ContentRules.scan_patterns)."""
    return rules.scan_patterns


def _scan(text: str, rules: ContentRules) -> scan.Found:
    """The one pass of the scan engine over a folded text: every identifier's candidates, the
    gates, and whether the joined view may hold more (read only for text with a digit)."""
    patterns = _identifier_patterns(rules)
    return identifiers.scan_text(text, patterns, _gates(rules),
                                 patterns if identifiers.has_digit(text) else ())


# The quoted view of a text is read a window of about this many characters of the text at a
# time (normalise.quoted_windows): whole, an 8 MiB reply's quoted lines, their bytes for the
# scan and their joined view held 2.3x the message beside it; a window at a time, 0.4x
# (issue 14, point 4).
_QUOTED_WINDOW = 1 << 20
# The least a window repeats of the one before, in characters that are neither a blank nor a
# line break: far more than any identifier, or a cue and the date after it, spans.
_OVERLAP_FLOOR = 4096


def _identifier_views(texts: list[_Text], scans: list[scan.Found],
                      patterns: tuple[re.Pattern[str], ...], window: int = _QUOTED_WINDOW
                      ) -> Iterator[tuple[str, scan.Found | None]]:
    """Each text with its scan, and again with its line breaks removed when it has any
    (normalise.joined; scanned when read; a window of about a quarter of `window` characters
    of the text at a time, `_joined_views`): an identifier broken over two lines is whole in
    the second, one ending a line in the first. The joined view is made only when the scan
    of the text saw an identifier's shape with line breaks inside (`Found.joined_may_match`).
    A body's or text file's quoted lines are read once more without their quote marks, and
    joined likewise (`_quoted`, a window of about `window` characters of the text at a time):
    a mail client that wraps a quoted line starts the next with the marks again, so an
    identifier wrapped there is whole in neither view of the text itself. `patterns` are the
    identifier patterns, for the views' own scans.
    """
    overlap = _quoted_overlap(patterns)
    for piece, found in zip(texts, scans, strict=True):
        yield piece.text, found
        yield from _joined_views(piece.text, found, overlap, max(1, window // 4))
        if piece.source not in (_Source.BODY, _Source.ATTACHMENT_TEXT):
            continue
        for quoted in _quoted(piece.text, window, overlap):
            if identifiers.has_digit(quoted):
                scanned = identifiers.scan_text(quoted, patterns, (), patterns)
                yield quoted, scanned
                yield from _joined_views(quoted, scanned, None, window)


def _quoted(text: str, window: int, overlap: int | None) -> Iterator[str]:
    """The text's quoted lines without their marks (normalise.quoted), a window at a time
    (normalise.quoted_windows); whole when `overlap` is None (`_quoted_overlap`)."""
    if overlap is None:
        yield normalise.quoted(text)
    else:
        yield from normalise.quoted_windows(text, window, overlap)


@functools.lru_cache(maxsize=16)
def _quoted_overlap(patterns: tuple[re.Pattern[str], ...]) -> int | None:
    """How much of the windows before it each window of a quoted view repeats, in characters
    that are neither a blank nor a line break (None: the view is read whole).

    A match holds at most W such characters: the most any pattern's does (`scan.solid_width`),
    with `identifiers.DOB_REACH` added for a cue and the date after it. One that ends in a
    window's own lines lies whole in the window when the window repeats W of them, in the
    window's joined view as in the whole view's: nothing found in the whole view is missed.
    (Case numbers and kinds are collected in a dict and a set: one found in two windows counts
    once.) A window can only find more, where it is cut from the text around it: at its very
    start, where the whole view had a character before it (glued on in the joined view), and
    at its very end, where it had one after it. It repeats three times W, so that a match
    added at its start cannot hide one that only it would find. When a pattern's W is
    unbounded (or unknown), the view is read whole, as a window could miss a match.
    """
    widths = [scan.solid_width(pattern) for pattern in patterns]
    if any(width is None for width in widths):
        return None
    reach = max((width or 0 for width in widths), default=0) + identifiers.DOB_REACH
    return max(_OVERLAP_FLOOR, 3 * reach)


def _joined_views(text: str, found: scan.Found, overlap: int | None, window: int
                  ) -> Iterator[tuple[str, scan.Found | None]]:
    """The text's joined view, when it may hold more than the text: whole, or a window of
    about `window` characters of the text at a time (`normalise.text_windows`, each window
    repeating `overlap`: see `_quoted_overlap`; None: whole). Joined whole, a text with
    blanks beside its line breaks (format=flowed, case notes) held 2.5 times itself for a
    moment, and its joined view and that view's bytes for the scan twice (1 MB of case
    notes: 3.79x the message beside it)."""
    if not identifiers.has_digit(text) or not found.joined_may_match() or "\n" not in text:
        return  # every identifier holds a digit; without a line break the view is the text
    parts = [text] if overlap is None else normalise.text_windows(text, window, overlap)
    for part in parts:
        whole = normalise.joined(part)
        if whole is not part:
            yield whole, None


def _identifiers(texts: list[_Text], rules: ContentRules, scans: list[scan.Found],
                 window: int = _QUOTED_WINDOW) -> tuple[tuple[str, ...], set[str]]:
    """The case numbers and the identifier kinds in the texts, from the candidates one pass
    of the scan engine (policies/scan.py) over each view of each text found (`window`: for
    the quoted views, `_identifier_views`). Numbers in a dict and kinds in a set: one found
    again in the next window of a quoted view counts once."""
    numbers: dict[str, None] = {}
    kinds: set[str] = set()
    patterns = _identifier_patterns(rules)
    for text, scanned in _identifier_views(texts, scans, patterns, window):
        found = scanned or identifiers.scan_text(text, patterns)
        for number in identifiers.find_case_numbers(text, rules.case_number_search,
                                                    rules.case_number_regex, found):
            numbers.setdefault(number)
        kinds |= identifiers.identifier_kinds(text, rules.date_of_birth_regex, frozenset(kinds),
                                              found)
    return tuple(numbers), kinds


# Which cues apply to which text, in order of precedence, and the reason a match gives.
_CUE_STAGES = (
    (_Source.SUBJECT, "labels", LABEL),
    (_Source.ATTACHMENT_NAME, "labels", CASE_DOCUMENT),
    (_Source.ATTACHMENT_TEXT, "keywords", CASE_DOCUMENT),
    (_Source.BODY, "keywords", LABEL),
)


def _information_type(rules: ContentRules, explicit: str | None, texts: list[_Text],
                      scans: list[scan.Found]) -> tuple[str, str | None]:
    """The information type and the protected reason it gives (None: not protected by it).

    The explicit header wins; then labels in the subject, attachment names, then content
    keywords in attachments, then in the body; the first type in table order that matches.
    """
    by_id = {t.id: t for t in rules.information_types}
    if explicit is not None:
        return explicit, LABEL if by_id[explicit].protected else None
    for source, cue, reason in _CUE_STAGES:
        if cue == "labels":
            found = rules.label_matcher.first_type_in(t.text for t in texts if t.source == source)
        else:  # keywords, in texts each scanned with them
            found = rules.keyword_matcher.first_type_found(
                (t.text, s) for t, s in zip(texts, scans, strict=True) if t.source == source)
        if found is not None:
            return found, reason if by_id[found].protected else None
    return GENERAL, None
