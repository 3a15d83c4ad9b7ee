"""Opening containers: zip archives, Outlook .msg messages and embedded OLE objects.

DESIGN ruling 22: what a container holds is classified as if it had been attached to the
message itself. The readers here hand back what they find, file by file (`Member`, with its
name and how deep it lies), and any text the container carries itself (`Text`: a message's
subject and body); policies.content classifies each member as an attachment, opening it in turn
when it is a container. RFC 5322 messages (.eml files, forwarded messages) are read by
policies.content with the same MIME walk as the message itself, and the files embedded in
Office documents and PDFs are handed back by policies.extract.

All of it runs within one `Budget` per message: how deep containers may nest, how many files
they may hold and how many bytes they may unpack, all together, and a deadline read from the
injected clock (policies.content_rules.Limits). A container that is encrypted, damaged, of a
kind casegate does not open, or beyond a budget raises `Unopened` with the reason; the caller
counts it unreadable, and the engine refuses it for every outside recipient
(rule unreadable-container). Declared sizes are never trusted: every read is capped.

Outlook .msg files are read with olefile (the OLE2 library extract-msg is built on) and the
stream names of [MS-OXMSG]: subject, plain and HTML body, each attachment's data and name, and
embedded messages, recursively. Of an embedded OLE object only the file it carries is taken
out ([MS-OLEDS] OLE1.0 "Package" native data, or a CONTENTS or Package stream).
"""

from __future__ import annotations

import io
import struct
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import olefile

from policies.content_rules import Limits
from policies.extract import html_to_text

Clock = Callable[[], float]

# Why a container was not opened (model.Attachment.unopened).
ENCRYPTED = "encrypted"  # a password is needed
DAMAGED = "damaged"  # not a well-formed container of its kind
UNSUPPORTED = "unsupported"  # a kind casegate does not open (7z, rar, an OLE object's own data)
DEPTH = "depth"  # containers nested deeper than max_container_depth
FILES = "files"  # more than max_container_files files in the message's containers
BYTES = "bytes"  # more than container_bytes unpacked, or one file over attachment_bytes
TIME = "time"  # past container_seconds (or the message's own deadline)
UNOPENED_REASONS = (ENCRYPTED, DAMAGED, UNSUPPORTED, DEPTH, FILES, BYTES, TIME)


class Unopened(Exception):
    """A container that cannot be opened, and why (one of UNOPENED_REASONS)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Member:
    """A file found inside a container, to be classified as an attachment."""

    name: str
    data: bytes
    depth: int  # 1 for a file of an attached container, 2 for a file inside that, ...
    declared_type: str = "application/octet-stream"


@dataclass(frozen=True)
class Text:
    """Text a container carries itself: a message's subject or body."""

    text: str


@dataclass
class Budget:
    """What the containers of one message may still spend, all of them together."""

    limits: Limits
    clock: Clock
    files: int = 0
    unpacked: int = 0

    def enter(self, depth: int) -> None:
        """A file or message at `depth` (1: inside an attached container) may be opened."""
        if depth > self.limits.max_container_depth:
            raise Unopened(DEPTH)

    def files_left(self) -> int:
        return self.limits.max_container_files - self.files

    def room(self) -> int:
        """The most bytes the next file may have: one attachment's, and what is left."""
        return max(0, min(self.limits.attachment_bytes,
                          self.limits.container_bytes - self.unpacked))

    def admit(self, member: Member) -> None:
        """Count one file taken out of a container; Unopened once a budget is spent."""
        self.enter(member.depth)
        self.files += 1
        if self.files > self.limits.max_container_files:
            raise Unopened(FILES)
        if len(member.data) > self.room():
            raise Unopened(BYTES)
        self.unpacked += len(member.data)

    def take_text(self, characters: int) -> None:
        """Count text read from a file inside a container: one character as one byte of the
        unpacked budget, so that many small files of compressed text cannot fill memory."""
        self.unpacked += characters
        if self.unpacked > self.limits.container_bytes:
            raise Unopened(BYTES)

    def check_time(self, deadline: float) -> None:
        if self.clock() > deadline:
            raise Unopened(TIME)


def _guarded(items: Iterator[Member | Text]) -> Iterator[Member | Text]:
    """The items, with anything the parsers raise (zipfile, zlib, olefile, struct: hostile
    input makes them raise almost anything) turned into Unopened(DAMAGED)."""
    try:
        yield from items
    except Unopened:
        raise
    except Exception as exc:
        raise Unopened(DAMAGED) from exc


# --- zip ----------------------------------------------------------------------------------

_CENTRAL_ENTRY = b"PK\x01\x02"  # each central directory entry starts with it
_ZIP_ENCRYPTED = 0x1  # general purpose flag bit 0 (traditional and AES encryption alike)


def zip_members(data: bytes, depth: int, budget: Budget,
                deadline: float) -> Iterator[Member | Text]:
    """The files of a zip archive attached at `depth`, read one at a time."""
    # Each central directory entry begins with this signature, so the count bounds the number
    # of entries: an archive of too many files is refused before zipfile parses its directory.
    if data.count(_CENTRAL_ENTRY) > budget.files_left():
        raise Unopened(FILES)
    return _guarded(_zip_members(data, depth, budget, deadline))


def _zip_members(data: bytes, depth: int, budget: Budget,
                 deadline: float) -> Iterator[Member | Text]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        entries = [info for info in archive.infolist() if not info.is_dir()]
        if any(info.flag_bits & _ZIP_ENCRYPTED for info in entries):
            raise Unopened(ENCRYPTED)
        for info in entries:
            budget.check_time(deadline)
            room = budget.room()
            if info.file_size > room:  # a declared size over budget: no need to inflate it
                raise Unopened(BYTES)
            with archive.open(info) as stream:
                content = stream.read(room + 1)  # never trust the declared size (zip bombs)
            yield Member(info.filename, content, depth + 1)


# --- OLE2: Outlook messages and embedded objects -------------------------------------------

def _open_ole(data: bytes) -> olefile.OleFileIO:
    """An OLE2 file from bytes; any defect olefile finds is an error (fail closed)."""
    # A file object, never bytes: olefile takes bytes shorter than 1536 for a path to open.
    return olefile.OleFileIO(io.BytesIO(data), raise_defects=olefile.DEFECT_INCORRECT)


class _Ole:
    """An open OLE2 file's streams, found by path without regard to case, read within budget."""

    def __init__(self, ole: olefile.OleFileIO, budget: Budget) -> None:
        self.ole = ole
        self.budget = budget
        self.paths = {tuple(p.lower() for p in path): path
                      for path in ole.listdir(streams=True, storages=True)}

    def has(self, *path: str) -> bool:
        return tuple(p.lower() for p in path) in self.paths

    def children(self, *prefix: str) -> list[str]:
        """The names directly inside the storage at `prefix`, in order."""
        lowered = tuple(p.lower() for p in prefix)
        return sorted(path[len(prefix)] for key, path in self.paths.items()
                      if len(key) == len(prefix) + 1 and key[:len(prefix)] == lowered)

    def read(self, *path: str) -> bytes | None:
        """A stream's bytes, or None when there is no such stream; Unopened(BYTES) when it is
        bigger than a file may be."""
        found = self.paths.get(tuple(p.lower() for p in path))
        if found is None or self.ole.get_type(found) != olefile.STGTY_STREAM:
            return None
        if self.ole.get_size(found) > self.budget.room():
            raise Unopened(BYTES)
        with self.ole.openstream(found) as stream:
            return bytes(stream.read())


def ole_package_members(data: bytes, depth: int, budget: Budget,
                        deadline: float) -> Iterator[Member | Text]:
    """The file an embedded OLE object (an Office document's oleObject1.bin) carries."""
    return _guarded(_ole_package_members(data, depth, budget, deadline))


def _ole_package_members(data: bytes, depth: int, budget: Budget,
                         deadline: float) -> Iterator[Member | Text]:
    with _open_ole(data) as ole:
        name, payload = _ole_payload(_Ole(ole, budget), ())
    budget.check_time(deadline)
    yield Member(name, payload, depth + 1)


def _ole_payload(ole: _Ole, storage: tuple[str, ...]) -> tuple[str, bytes]:
    """The name and bytes of the file an OLE object in `storage` carries, else UNSUPPORTED."""
    native = ole.read(*storage, "\x01Ole10Native")
    if native is not None:
        return _ole10_native(native)
    for stream in ("Package", "CONTENTS"):  # an embedded OOXML document; a PDF (AcroExch)
        payload = ole.read(*storage, stream)
        if payload is not None:
            return "", payload
    raise Unopened(UNSUPPORTED)  # an object that is its own data (an equation, a drawing)


def _ole10_native(stream: bytes) -> tuple[str, bytes]:
    """The file in OLE1.0 native data of the Package class: a 4-byte size, then flags (2), the
    label and the file's path (NUL-terminated ANSI), 4 bytes, a command (length-prefixed),
    the file's size (4) and its bytes. Other native data is handed back whole."""
    (size,) = struct.unpack_from("<I", stream, 0)
    native = stream[4:4 + size]
    try:
        at = 2
        label, at = _c_string(native, at)
        _path, at = _c_string(native, at)
        at += 4
        (command_length,) = struct.unpack_from("<I", native, at)
        at += 4 + command_length
        (file_size,) = struct.unpack_from("<I", native, at)
        at += 4
    except (struct.error, ValueError):
        return "", native
    if at + file_size > len(native):
        raise Unopened(DAMAGED)
    return label, native[at:at + file_size]


def _c_string(data: bytes, at: int) -> tuple[str, int]:
    end = data.index(b"\x00", at, at + 1024)  # ValueError when there is none: not a Package
    return data[at:end].decode("cp1252", errors="replace"), end + 1


# [MS-OXMSG] property streams: __substg1.0_<property id><property type>.
_UNICODE, _STRING8, _BINARY, _OBJECT = "001F", "001E", "0102", "000D"
_SUBJECT, _BODY, _HTML, _RTF = "0037", "1000", "1013", "1009"
_ATTACH_DATA, _ATTACH_LONG_FILENAME, _ATTACH_FILENAME, _ATTACH_MIME_TAG = (
    "3701", "3707", "3704", "370E")
_PROPERTIES = "__properties_version1.0"
_ATTACHMENT_PREFIX = "__attach_version1.0_#"
# What a message's storage may hold besides property streams ([MS-OXMSG] 2.2): anything else is
# a file Outlook would not show but a tool could take out, so the .msg counts as damaged.
_MESSAGE_ENTRIES = ("__substg1.0_", _PROPERTIES, "__nameid_version1.0", "__recip_version1.0_#",
                    _ATTACHMENT_PREFIX)


def msg_members(data: bytes, depth: int, budget: Budget,
                deadline: float) -> Iterator[Member | Text]:
    """The subject, body and attachments of an Outlook .msg attached at `depth`, and of the
    messages attached to it, however deep (within the depth budget)."""
    return _guarded(_msg_members(data, depth, budget, deadline))


def _msg_members(data: bytes, depth: int, budget: Budget,
                 deadline: float) -> Iterator[Member | Text]:
    with _open_ole(data) as ole:
        yield from _msg_message(_Ole(ole, budget), (), depth, deadline)


def _msg_message(ole: _Ole, storage: tuple[str, ...], depth: int,
                 deadline: float) -> Iterator[Member | Text]:
    """One message (the file's root, or an embedded message's storage) lying at `depth`."""
    ole.budget.enter(depth)
    ole.budget.check_time(deadline)
    subject = _msg_string(ole, storage, _SUBJECT)
    if subject:
        yield Text(subject)
    body = _msg_string(ole, storage, _BODY)
    html = ole.read(*storage, f"__substg1.0_{_HTML}{_BINARY}")
    html_text = (_msg_string(ole, storage, _HTML)
                 or (html.decode("utf-8", errors="replace") if html is not None else ""))
    if not body and not html_text and ole.has(*storage, f"__substg1.0_{_RTF}{_BINARY}"):
        raise Unopened(UNSUPPORTED)  # only a compressed RTF body: not read (fail closed)
    if body:
        yield Text(body)
    if html_text:
        yield Text(html_to_text(html_text))
        yield Text(html_text)  # as for an HTML body: attribute values and hidden text leave
    for child in ole.children(*storage):
        if not child.lower().startswith(_MESSAGE_ENTRIES):
            raise Unopened(DAMAGED)
        if child.lower().startswith(_ATTACHMENT_PREFIX):
            yield from _msg_attachment(ole, (*storage, child), depth, deadline)


def _msg_attachment(ole: _Ole, storage: tuple[str, ...], depth: int,
                    deadline: float) -> Iterator[Member | Text]:
    ole.budget.check_time(deadline)
    if not all(child.lower().startswith(("__substg1.0_", _PROPERTIES))
               for child in ole.children(*storage)):
        raise Unopened(DAMAGED)  # something in the attachment besides its properties
    name = (_msg_string(ole, storage, _ATTACH_LONG_FILENAME)
            or _msg_string(ole, storage, _ATTACH_FILENAME))
    declared = _msg_string(ole, storage, _ATTACH_MIME_TAG) or "application/octet-stream"
    embedded = (*storage, f"__substg1.0_{_ATTACH_DATA}{_OBJECT}")
    if ole.has(*embedded, _PROPERTIES):  # an attached Outlook item: a message in the message
        yield from _msg_message(ole, embedded, depth + 1, deadline)
    elif ole.has(*embedded):  # an OLE object: the file it carries, if it carries one
        object_name, payload = _ole_payload(ole, embedded)
        yield Member(name or object_name, payload, depth + 1, declared)
    else:  # by value; an attachment by reference has no data, only its name
        data = ole.read(*storage, f"__substg1.0_{_ATTACH_DATA}{_BINARY}")
        yield Member(name, data or b"", depth + 1, declared)


def _msg_string(ole: _Ole, storage: tuple[str, ...], property_id: str) -> str:
    unicode = ole.read(*storage, f"__substg1.0_{property_id}{_UNICODE}")
    if unicode is not None:
        return unicode.decode("utf-16-le", errors="replace").rstrip("\x00")
    eight_bit = ole.read(*storage, f"__substg1.0_{property_id}{_STRING8}")
    if eight_bit is not None:  # the message's code page is not read: Western European
        return eight_bit.decode("cp1252", errors="replace").rstrip("\x00")
    return ""
