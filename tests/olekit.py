"""OLE2 compound files made in code: Outlook .msg messages and embedded OLE objects.

No Python library writes .msg files, so the tests build them here from the published formats:
[MS-CFB] for the compound file (version 3, 512-byte sectors, a mini stream for streams under
4096 bytes) and [MS-OXMSG] for the message's storages and property streams; [MS-OLEDS] for an
OLE object's Package native data. policies.containers reads them with olefile, so these files
are real input, never a stand-in for our own code.

    msg = make_msg(subject="Report", body="Case ZC12C00123", attachments=[("r.docx", docx)])
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

SECTOR = 512
MINI_SECTOR = 64
MINI_CUTOFF = 4096
FREE, END, FAT_SECTOR = 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFD
NO_STREAM = 0xFFFFFFFF
_HEADER_FAT_SLOTS = 109

# A storage is a mapping of names to storages or stream bytes.
Tree = Mapping[str, "Tree | bytes"]


@dataclass
class _Entry:
    name: str
    kind: int  # 1 storage, 2 stream, 5 root
    data: bytes = b""
    children: list[int] = field(default_factory=list)
    left: int = NO_STREAM
    right: int = NO_STREAM
    child: int = NO_STREAM
    start: int = END
    size: int = 0


def _cfb_order(name: str) -> tuple[int, str]:
    """[MS-CFB] 2.6.4: shorter names first, then by upper-cased name."""
    return len(name), name.upper()


def make_cfb(tree: Tree) -> bytes:
    """A compound file holding `tree` (streams under 4096 bytes go to the mini stream)."""
    entries = [_Entry("Root Entry", 5)]
    _add(entries, 0, tree)
    for entry in entries:
        if entry.children:
            entry.child = _balanced(entries, sorted(entry.children,
                                                    key=lambda i: _cfb_order(entries[i].name)))

    sectors: list[bytes] = []  # regular sectors, in order
    fat: list[int] = []

    def allocate(data: bytes) -> int:
        if not data:
            return END
        count = -(-len(data) // SECTOR)
        first = len(sectors)
        for i in range(count):
            sectors.append(data[i * SECTOR:(i + 1) * SECTOR].ljust(SECTOR, b"\x00"))
            fat.append(first + i + 1 if i < count - 1 else END)
        return first

    mini_stream = bytearray()
    mini_fat: list[int] = []
    for entry in entries:
        if entry.kind != 2:
            continue
        entry.size = len(entry.data)
        if entry.size == 0:
            entry.start = END
        elif entry.size < MINI_CUTOFF:
            count = -(-entry.size // MINI_SECTOR)
            first = len(mini_fat)
            mini_stream += entry.data.ljust(count * MINI_SECTOR, b"\x00")
            mini_fat += [first + i + 1 if i < count - 1 else END for i in range(count)]
            entry.start = first
        else:
            entry.start = allocate(entry.data)
    entries[0].start = allocate(bytes(mini_stream))
    entries[0].size = len(mini_stream)
    mini_fat_bytes = struct.pack(f"<{len(mini_fat)}I", *mini_fat)
    mini_fat_start = allocate(mini_fat_bytes)
    mini_fat_sectors = -(-len(mini_fat_bytes) // SECTOR)
    directory = b"".join(_pack_entry(e) for e in entries)
    directory += _pack_entry(None) * (-len(entries) % (SECTOR // 128))
    directory_start = allocate(directory)

    fat_count = 1
    while (len(sectors) + fat_count) > fat_count * (SECTOR // 4):
        fat_count += 1
    if fat_count > _HEADER_FAT_SLOTS:
        raise ValueError("too big for a compound file without DIFAT sectors")
    fat_start = len(sectors)
    fat += [FAT_SECTOR] * fat_count
    fat += [FREE] * (fat_count * (SECTOR // 4) - len(fat))
    fat_bytes = struct.pack(f"<{len(fat)}I", *fat)
    sectors += [fat_bytes[i * SECTOR:(i + 1) * SECTOR] for i in range(fat_count)]

    difat = [fat_start + i for i in range(fat_count)]
    difat += [FREE] * (_HEADER_FAT_SLOTS - len(difat))
    header = struct.pack(
        "<8s16sHHHHH6sIIIIIIIII",
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", b"\x00" * 16, 0x3E, 3, 0xFFFE, 9, 6, b"\x00" * 6,
        0, fat_count, directory_start, 0, MINI_CUTOFF,
        mini_fat_start if mini_fat else END, mini_fat_sectors, END, 0,
    ) + struct.pack(f"<{_HEADER_FAT_SLOTS}I", *difat)
    return header + b"".join(sectors)


def _add(entries: list[_Entry], parent: int, tree: Tree) -> None:
    for name, value in tree.items():
        index = len(entries)
        if isinstance(value, bytes):
            entries.append(_Entry(name, 2, data=value))
        else:
            entries.append(_Entry(name, 1))
            _add(entries, index, value)
        entries[parent].children.append(index)


def _balanced(entries: list[_Entry], ordered: Sequence[int]) -> int:
    """The root of a balanced binary search tree of siblings (all black: readers accept it)."""
    if not ordered:
        return NO_STREAM
    middle = len(ordered) // 2
    root = entries[ordered[middle]]
    root.left = _balanced(entries, ordered[:middle])
    root.right = _balanced(entries, ordered[middle + 1:])
    return ordered[middle]


def _pack_entry(entry: _Entry | None) -> bytes:
    if entry is None:
        return b"\x00" * 64 + struct.pack("<HBBIII16sIQQIQ", 0, 0, 0, NO_STREAM, NO_STREAM,
                                          NO_STREAM, b"\x00" * 16, 0, 0, 0, 0, 0)
    name = (entry.name + "\x00").encode("utf-16-le")
    return name.ljust(64, b"\x00") + struct.pack(
        "<HBBIII16sIQQIQ", len(name), entry.kind, 1, entry.left, entry.right, entry.child,
        b"\x00" * 16, 0, 0, 0, entry.start, entry.size)


# --- Outlook messages ([MS-OXMSG]) --------------------------------------------------------

def _unicode(property_id: int, text: str) -> tuple[str, bytes]:
    return f"__substg1.0_{property_id:04X}001F", (text + "\x00").encode("utf-16-le")


def _properties(header: bytes, fixed: Sequence[tuple[int, int]] = ()) -> bytes:
    """A property stream: its header, then (tag, flags, 8-byte value) for fixed properties."""
    return header + b"".join(struct.pack("<IIQ", tag, 6, value) for tag, value in fixed)


@dataclass
class Msg:
    """One message, to be written as a .msg file or attached inside another."""

    subject: str = "Update"
    body: str | None = "Please see attached."
    html: str | None = None
    rtf_only: bool = False  # only a compressed RTF body (PR_RTF_COMPRESSED), as some clients
    attachments: Sequence[tuple[str, bytes]] = ()
    messages: Sequence[Msg] = ()  # attached Outlook items
    ole_objects: Sequence[Tree] = ()  # attachments by OLE object (PR_ATTACH_METHOD 6)

    def tree(self, embedded: bool = False) -> dict[str, Tree | bytes]:
        count = len(self.attachments) + len(self.messages) + len(self.ole_objects)
        header = struct.pack("<8xIIII", 0, count, 0, count) + (b"" if embedded else b"\x00" * 8)
        tree: dict[str, Tree | bytes] = {
            "__properties_version1.0": _properties(header),
            "__substg1.0_001A001F": _unicode(0x001A, "IPM.Note")[1],
        }
        if not embedded:
            tree["__nameid_version1.0"] = {
                "__substg1.0_00020102": b"", "__substg1.0_00030102": b"",
                "__substg1.0_00040102": b"",
            }
        tree.update([_unicode(0x0037, self.subject)])
        if self.rtf_only:
            tree["__substg1.0_10090102"] = b"\x00" * 16  # a compressed RTF header, no text
        else:
            if self.body is not None:
                tree.update([_unicode(0x1000, self.body)])
            if self.html is not None:
                tree["__substg1.0_10130102"] = self.html.encode("utf-8")
        index = 0
        for name, data in self.attachments:
            tree[f"__attach_version1.0_#{index:08X}"] = _attachment(1, {
                **dict([_unicode(0x3707, name), _unicode(0x3704, name[:12])]),
                "__substg1.0_37010102": data,
            })
            index += 1
        for message in self.messages:
            tree[f"__attach_version1.0_#{index:08X}"] = _attachment(5, {
                "__substg1.0_3701000D": message.tree(embedded=True),
            })
            index += 1
        for ole in self.ole_objects:
            tree[f"__attach_version1.0_#{index:08X}"] = _attachment(6, {
                "__substg1.0_3701000D": ole,
            })
            index += 1
        return tree


def _attachment(method: int, streams: dict[str, Tree | bytes]) -> dict[str, Tree | bytes]:
    return {"__properties_version1.0": _properties(b"\x00" * 8, [(0x37050003, method)]),
            **streams}


def make_msg(subject: str = "Update", body: str | None = "Please see attached.",
             attachments: Sequence[tuple[str, bytes]] = (), **more: object) -> bytes:
    """An Outlook .msg file; `more` takes the other fields of `Msg`."""
    return make_cfb(Msg(subject, body, attachments=attachments, **more).tree())  # type: ignore[arg-type]


def nested_msg(levels: int, innermost: Msg) -> bytes:
    """A .msg with `innermost` attached `levels` messages deep, each attached to the one above."""
    message = innermost
    for level in range(levels):
        message = Msg(subject=f"FW: level {level}", body="Forwarded.", messages=[message])
    return make_cfb(message.tree())


# --- OLE objects ([MS-OLEDS]) and legacy Office ------------------------------------------

def ole10_native(filename: str, data: bytes) -> bytes:
    """The \\x01Ole10Native stream of a Package object carrying `data` as `filename`."""
    name = filename.encode("cp1252") + b"\x00"
    path = f"C:\\Users\\jo\\{filename}".encode("cp1252") + b"\x00"
    native = (struct.pack("<H", 2) + name + path + struct.pack("<HH", 0, 3)
              + struct.pack("<I", len(path)) + path + struct.pack("<I", len(data)) + data)
    return struct.pack("<I", len(native)) + native


def package_object(filename: str, data: bytes) -> dict[str, Tree | bytes]:
    """The storage of an embedded OLE Package object (an Office document's oleObject1.bin)."""
    return {"\x01CompObj": b"\x01\x00\xfe\xff" + b"\x00" * 24,
            "\x01Ole10Native": ole10_native(filename, data)}


def make_ole_package(filename: str, data: bytes) -> bytes:
    return make_cfb(package_object(filename, data))


def make_legacy_word(encrypted: bool) -> bytes:
    """A legacy Word file's container: a WordDocument stream whose FIB says if it is encrypted."""
    fib = bytearray(b"\xec\xa5" + b"\x00" * 4094)  # wIdent, then a FibBase of zeros
    struct.pack_into("<H", fib, 0x0A, 0x0100 if encrypted else 0)
    return make_cfb({"WordDocument": bytes(fib), "1Table": b"\x00" * 512})
