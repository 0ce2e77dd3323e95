"""Capture files: classic pcap and pcapng, read as a stream of frames.

Both byte orders, micro- and nanosecond classic pcap, pcapng with several
sections and interfaces (each with its own link type and if_tsresol /
if_tsoffset). Files are read in large chunks and parsed with struct, because
this loop runs once per packet; `CaptureReader.batches` hands the records
over in lists, and the classic pcap records whole in a chunk are cut out by
one call of `pcap_records` (C in wirebeat._speedups when built, else
`pcap_records_python`, the reference).

Damage handling, so that a file still being written or a rotated file gives
everything it holds:
- a file that is missing, empty, too short for its header or not a capture
  raises `CaptureError` before any frame is produced (the CLI exits 2);
- a record cut off at the end of the file stops reading, counted as
  `truncated_tail`;
- a record whose header is impossible (caplen above snaplen or 256 KiB, a
  pcapng block length that disagrees with itself) is garbage: the reader
  scans forward for the next plausible record and counts the bytes skipped.
"""
from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from wirebeat.accel import speedups

__all__ = ["CaptureError", "CaptureReader", "Frame", "FormatError", "Interface", "PcapHeader",
           "ReadDamage", "open_capture", "parse_idb", "parse_pcap_header", "parse_shb",
           "pcap_records", "pcap_records_python", "read_packet_block"]

CHUNK_BYTES = 1 << 20
BATCH_FRAMES = 4096            # records handed over at once (`CaptureReader.batches`)
MAX_RECORD_BYTES = 262144      # libpcap's MAXIMUM_SNAPLEN: no real record is larger
_PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6), b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9), b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
_PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
_BOM = 0x1A2B3C4D


class CaptureError(Exception):
    """The file cannot be read as a capture at all (the CLI exits 2)."""


class FormatError(ValueError):
    """A capture header or block is not valid; `reason` is a stable counter label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(slots=True)
class Frame:
    """One captured frame."""

    ts: float           # seconds since the epoch
    linktype: int       # LINKTYPE_* value
    data: bytes         # captured bytes (caplen)
    wire_len: int       # original length on the wire


@dataclass(slots=True)
class ReadDamage:
    """What was wrong with a capture file and skipped."""

    truncated_tail: int = 0       # records cut off at the end of input
    garbage_bytes: int = 0        # bytes skipped to resynchronise
    garbage_records: int = 0      # times a bad record header forced a resync
    unknown_interface: int = 0    # pcapng packets naming an interface not described
    details: list[str] = field(default_factory=list)

    def any(self) -> bool:
        return bool(self.truncated_tail or self.garbage_records or self.unknown_interface)


# -- parsers shared by files and the ZeroMQ feed (which sends headers and
#    records as separate message parts) ------------------------------------


@dataclass(frozen=True, slots=True)
class PcapHeader:
    """A classic pcap global header, with what reading its records needs."""

    order: str              # struct byte order, "<" or ">"
    scale: float            # seconds per unit of the records' fraction field
    frac_max: int           # the fraction field is below this
    snaplen: int
    linktype: int
    max_caplen: int         # snaplen, capped at MAX_RECORD_BYTES (0 means the cap)
    record: struct.Struct   # the 16-byte record header in this byte order


def parse_pcap_header(buf: bytes) -> PcapHeader:
    """The 24-byte classic pcap header at the start of `buf`. Raises FormatError."""
    if len(buf) < 24:
        raise FormatError("header", f"too short for a pcap header ({len(buf)} of 24 bytes)")
    magic = _PCAP_MAGICS.get(bytes(buf[:4]))
    if magic is None:
        raise FormatError("header", f"not a pcap header (magic {bytes(buf[:4]).hex()})")
    order, scale = magic
    major, _minor, _zone, _sigfigs, snaplen, linktype = struct.unpack_from(order + "HHiIII", buf, 4)
    if major != 2:
        raise FormatError("header", f"unsupported pcap version {major}")
    # Some writers store the FCS length in the upper bits of the link type.
    linktype &= 0x0FFFFFFF
    max_caplen = min(snaplen, MAX_RECORD_BYTES) if snaplen else MAX_RECORD_BYTES
    return PcapHeader(order, scale, 1_000_000 if scale == 1e-6 else 1_000_000_000, snaplen,
                      linktype, max_caplen, struct.Struct(order + "IIII"))


@dataclass(frozen=True, slots=True)
class Interface:
    """A pcapng Interface Description Block, reduced to what frames need."""

    linktype: int
    scale: float            # seconds per timestamp unit (if_tsresol)
    offset_s: float         # if_tsoffset
    snaplen: int            # 0: no limit


def parse_shb(buf: bytes, pos: int = 0) -> tuple[str, int]:
    """Byte order and total length of the Section Header Block at `pos`. Raises FormatError.

    The caller checks that `total` bytes are there.
    """
    if len(buf) - pos < 28 or buf[pos:pos + 4] != _PCAPNG_SHB:
        raise FormatError("header", "not a pcapng section header")
    if struct.unpack_from("<I", buf, pos + 8)[0] == _BOM:
        order = "<"
    elif struct.unpack_from(">I", buf, pos + 8)[0] == _BOM:
        order = ">"
    else:
        raise FormatError("header", "pcapng section header has no valid byte-order magic")
    total = struct.unpack_from(order + "I", buf, pos + 4)[0]
    if total < 28 or total % 4 or total > 1 << 20:
        raise FormatError("header", f"pcapng section header has a bad length ({total})")
    return order, total


def parse_idb(buf: bytes, pos: int, total: int, order: str) -> Interface:
    """The Interface Description Block buf[pos:pos + total] (its lengths already checked)."""
    body = pos + 8
    linktype, _reserved, snaplen = struct.unpack_from(order + "HHI", buf, body)
    scale, offset_s = 1e-6, 0.0
    for code, value in _options(buf, body + 8, pos + total - 4, order):
        if code == 9 and value:                  # if_tsresol
            r = value[0]
            scale = 2.0 ** -(r & 0x7F) if r & 0x80 else 10.0 ** -r
        elif code == 14 and len(value) >= 8:     # if_tsoffset, seconds
            offset_s = float(struct.unpack_from(order + "q", value)[0])
    return Interface(linktype, scale, offset_s, snaplen)


PACKET_BLOCK_TYPES = frozenset({2, 3, 6})     # obsolete Packet, Simple Packet, Enhanced Packet


def read_packet_block(buf: bytes, pos: int, block_type: int, total: int, order: str,
                      interfaces: list[Interface]) -> Frame | str:
    """The frame in the packet block buf[pos:pos + total], or why there is none.

    The block's leading and trailing lengths are already checked. Reasons:
    "short_block", "caplen_past_block", "unknown_interface".
    """
    body = pos + 8
    if block_type == 6:                          # Enhanced Packet Block
        if total < 32:
            return "short_block"
        iface, ts_hi, ts_lo, caplen, wire_len = struct.unpack_from(order + "IIIII", buf, body)
    elif block_type == 2:                        # obsolete Packet Block
        if total < 32:
            return "short_block"
        iface, _drops, ts_hi, ts_lo, caplen, wire_len = struct.unpack_from(order + "HHIIII", buf, body)
    else:                                        # Simple Packet Block
        if total < 16:
            return "short_block"
        if not interfaces:
            return "unknown_interface"
        wire_len = struct.unpack_from(order + "I", buf, body)[0]
        caplen = min(wire_len, total - 16)
        # No timestamp in an SPB: 0 says "unknown" rather than inventing one.
        return Frame(0.0, interfaces[0].linktype, buf[body + 4:body + 4 + caplen], wire_len)
    if caplen > total - 32:
        return "caplen_past_block"
    if iface >= len(interfaces):
        return "unknown_interface"
    interface = interfaces[iface]
    return Frame(((ts_hi << 32) | ts_lo) * interface.scale + interface.offset_s,
                 interface.linktype, buf[body + 20:body + 20 + caplen], wire_len)


def pcap_records_python(buf: bytes, pos: int, little: bool, scale: float, max_caplen: int,
                        frac_max: int, linktype: int, max_count: int) -> tuple[list, int, int | None]:
    """The classic pcap records whole in buf[pos:], up to `max_count` of them: a list of
    (ts, linktype, data, wire_len), the position after them and the last one's seconds
    (None when there is none). Stops before a damaged record header (caplen above
    max_caplen, a fraction not below frac_max), which the caller handles."""
    unpack = (_RECORD_LE if little else _RECORD_BE).unpack_from
    out: list[tuple[float, int, bytes, int]] = []
    end = len(buf) - 16
    last_sec = None
    while pos <= end and len(out) < max_count:
        sec, frac, caplen, wire_len = unpack(buf, pos)
        following = pos + 16 + caplen
        if caplen > max_caplen or frac >= frac_max or following > end + 16:
            break
        out.append((sec + frac * scale, linktype, buf[pos + 16:following], wire_len))
        last_sec = sec
        pos = following
    return out, pos, last_sec


_RECORD_LE, _RECORD_BE = struct.Struct("<IIII"), struct.Struct(">IIII")
# The C twin (wirebeat._speedups.pcap_records) when built; tests/beat/test_framecore.py compares them.
pcap_records = speedups.pcap_records if speedups is not None else pcap_records_python


def open_capture(path: str, stdin: BinaryIO | None = None) -> CaptureReader:
    """Open `path` ("-" for stdin) and check its header. Raises CaptureError."""
    if path == "-":
        assert stdin is not None
        return CaptureReader(stdin, "-", size=None)
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        raise CaptureError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CaptureError(f"{path}: is a directory, not a capture file") from None
    except PermissionError:
        raise CaptureError(f"{path}: permission denied") from None
    except OSError as err:
        raise CaptureError(f"{path}: cannot open: {err.strerror}") from None
    size = os.fstat(fh.fileno()).st_size
    try:
        return CaptureReader(fh, path, size=size)
    except CaptureError:
        fh.close()
        raise


class CaptureReader:
    """Iterate `Frame`s of one capture (or `batches` of record tuples); `damage` says what
    was skipped."""

    def __init__(self, fh: BinaryIO, name: str, size: int | None) -> None:
        self.fh = fh
        self.name = name
        self.size = size
        self.damage = ReadDamage()
        self.bytes_consumed = 0
        self._buf = b""
        self._pos = 0
        self._eof = False
        self.pcap_header: PcapHeader | None = None     # a classic pcap file's, once read
        head = self._peek(4)
        if len(head) == 0:
            raise CaptureError(f"{name}: empty file, not a capture")
        if len(head) < 4:
            raise CaptureError(f"{name}: too short for a capture file header ({len(head)} bytes)")
        if head in _PCAP_MAGICS:
            self._frames = self._read_pcap()
        elif head == _PCAPNG_SHB:
            self._frames = self._read_pcapng()
        else:
            raise CaptureError(f"{name}: not a pcap or pcapng file (starts with {head.hex()})")
        # Validate the header now, so a bad file fails before anything is processed.
        self._first = next(self._frames, None)

    def batches(self) -> Iterator[list[tuple[float, int, bytes, int]]]:
        """The frames as lists of (ts, linktype, data, wire_len): what `Frame` holds, without
        an object and a generator step per packet (the run loop's way to read)."""
        if self._first is not None:
            first, self._first = self._first, None
            yield first
        yield from self._frames

    def __iter__(self) -> Iterator[Frame]:
        for batch in self.batches():
            for record in batch:
                yield Frame(*record)

    def close(self) -> None:
        if self.name != "-":
            self.fh.close()

    # -- buffering -------------------------------------------------------------

    def _fill(self, need: int) -> bool:
        """Make `need` bytes available at self._pos; False at end of input."""
        avail = len(self._buf) - self._pos
        while avail < need and not self._eof:
            more = self.fh.read(max(CHUNK_BYTES, need - avail))
            if not more:
                self._eof = True
                break
            self._buf = self._buf[self._pos:] + more
            self._pos = 0
            avail = len(self._buf)
        return avail >= need

    def _peek(self, n: int) -> bytes:
        self._fill(n)
        return self._buf[self._pos:self._pos + n]

    def _advance(self, n: int) -> None:
        self._pos += n
        self.bytes_consumed += n

    # -- classic pcap ----------------------------------------------------------

    def _read_pcap(self) -> Iterator[list[tuple[float, int, bytes, int]]]:
        if not self._fill(24):
            raise CaptureError(f"{self.name}: too short for a pcap header "
                               f"({len(self._buf) - self._pos} of 24 bytes)")
        try:
            header = parse_pcap_header(self._buf[self._pos:self._pos + 24])
        except FormatError as err:
            raise CaptureError(f"{self.name}: {err}") from None
        self.pcap_header = header
        self._advance(24)
        yield from self._pcap_records(header, None)

    def resume_pcap(self, pos: int, last_sec: int | None) -> Iterator[list[tuple[float, int, bytes, int]]]:
        """The batches of a classic pcap file from byte `pos` on (a record's start), read
        exactly as `batches` reads them from the start would (damage, its byte offsets,
        bytes_consumed); `last_sec`: the seconds of the record before `pos` (None at the
        first), which resynchronising after a damaged record compares with. For a caller
        that read the records before `pos` itself (workers: a mapped file, up to its first
        damaged record). The reader's own position is discarded."""
        header = self.pcap_header
        if header is None or pos < 24:
            raise ValueError("resume_pcap: a classic pcap file's record, after its header")
        self.fh.seek(pos)
        self._buf, self._pos, self._eof = b"", 0, False
        self.bytes_consumed = pos
        self._first = None
        self._frames = self._pcap_records(header, last_sec)
        return self.batches()

    def _pcap_records(self, header: PcapHeader, last_sec: int | None) -> Iterator[list[tuple[float, int, bytes, int]]]:
        linktype, scale, max_caplen, frac_max = (header.linktype, header.scale,
                                                 header.max_caplen, header.frac_max)
        unpack = header.record.unpack_from
        little = header.order == "<"
        while True:
            # Every whole record already in the buffer, in batches (one C call with the
            # accelerator); a damaged record or the buffer's end takes the careful path below.
            batch, pos, sec = pcap_records(self._buf, self._pos, little, scale, max_caplen, frac_max,
                                           linktype, BATCH_FRAMES)
            if batch:
                self.bytes_consumed += pos - self._pos
                self._pos = pos
                last_sec = sec
                yield batch
                continue
            if not self._fill(16):
                if len(self._buf) - self._pos:
                    self._note_tail("record header")
                return
            buf, pos = self._buf, self._pos
            sec, frac, caplen, wire_len = unpack(buf, pos)
            if caplen > max_caplen or frac >= frac_max:
                self._resync_pcap(unpack, max_caplen, frac_max, last_sec)
                continue
            if not self._fill(16 + caplen):
                self._note_tail("record data")
                return
            buf, pos = self._buf, self._pos
            self._pos = pos + 16 + caplen
            self.bytes_consumed += 16 + caplen
            last_sec = sec
            yield [(sec + frac * scale, linktype, buf[pos + 16:pos + 16 + caplen], wire_len)]

    def _resync_pcap(self, unpack, max_caplen: int, frac_max: int, last_sec: int | None) -> None:
        """Skip forward to the next offset that holds two plausible records in a row."""
        self.damage.garbage_records += 1
        skipped = 1
        self._advance(1)
        while self._fill(16):
            if self._plausible_pcap(unpack, 0, max_caplen, frac_max, last_sec):
                caplen = unpack(self._buf, self._pos)[2]
                if not self._fill(16 + caplen + 16) or self._plausible_pcap(
                        unpack, 16 + caplen, max_caplen, frac_max, last_sec):
                    break
            self._advance(1)
            skipped += 1
        self.damage.garbage_bytes += skipped
        self.damage.details.append(f"garbage record at byte {self.bytes_consumed - skipped}, "
                                   f"skipped {skipped} bytes")

    def _plausible_pcap(self, unpack, at: int, max_caplen: int, frac_max: int,
                        last_sec: int | None) -> bool:
        sec, frac, caplen, wire_len = unpack(self._buf, self._pos + at)
        if caplen > max_caplen or frac >= frac_max or wire_len < caplen or wire_len > 0x40000:
            return False
        # A day either side of the last good record: real captures do not jump further.
        return last_sec is None or abs(sec - last_sec) <= 86400

    def _note_tail(self, what: str) -> None:
        self.damage.truncated_tail += 1
        self.damage.details.append(f"capture ends inside a {what} at byte {self.bytes_consumed}")

    # -- pcapng ----------------------------------------------------------------

    def _read_pcapng(self) -> Iterator[list[tuple[float, int, bytes, int]]]:
        """Packet blocks in batches, as `_read_pcap` gives them: every frame already in the
        buffer, at most BATCH_FRAMES; a batch goes out before the reader waits for more
        input, so a live pipe's frames are not held back."""
        order = self._read_shb(first=True)
        interfaces: list[Interface] = []
        batch: list[tuple[float, int, bytes, int]] = []
        while True:
            if batch and (len(batch) >= BATCH_FRAMES or len(self._buf) - self._pos < 12):
                yield batch
                batch = []
            if not self._fill(12):
                if len(self._buf) - self._pos:
                    self._note_tail("block header")
                return
            buf, pos = self._buf, self._pos
            if buf[pos:pos + 4] == _PCAPNG_SHB:
                if batch:
                    yield batch
                    batch = []
                order = self._read_shb(first=False)
                if order is None:
                    return
                interfaces = []
                continue
            block_type, total = struct.unpack_from(order + "II", buf, pos)
            if total < 12 or total % 4 or total > MAX_RECORD_BYTES + 64:
                self._resync_pcapng(order)
                continue
            if len(buf) - pos < total:
                if batch:
                    yield batch
                    batch = []
                if not self._fill(total):
                    self._note_tail("block")
                    return
                buf, pos = self._buf, self._pos
            if struct.unpack_from(order + "I", buf, pos + total - 4)[0] != total:
                self._resync_pcapng(order)
                continue
            self._advance(total)
            if block_type in PACKET_BLOCK_TYPES:
                got = read_packet_block(buf, pos, block_type, total, order, interfaces)
                if got.__class__ is Frame:
                    batch.append((got.ts, got.linktype, got.data, got.wire_len))
                elif got == "caplen_past_block" and block_type == 6:
                    self.damage.garbage_records += 1
                    self.damage.details.append(f"EPB caplen past its block at byte {self.bytes_consumed - total}")
                elif got != "short_block":       # a block too short to be one is skipped
                    self.damage.unknown_interface += 1
            elif block_type == 1 and total >= 20:            # Interface Description Block
                interfaces.append(parse_idb(buf, pos, total, order))
            # every other block type (statistics, name resolution, ...) is skipped

    def _read_shb(self, first: bool) -> str | None:
        if not self._fill(28):
            if first:
                raise CaptureError(f"{self.name}: too short for a pcapng section header")
            self._note_tail("section header")
            return None
        try:
            order, total = parse_shb(self._buf, self._pos)
        except FormatError as err:
            if first:
                raise CaptureError(f"{self.name}: {err}") from None
            # Resynchronise in the byte order the block claims, little-endian if none.
            order = ">" if struct.unpack_from(">I", self._buf, self._pos + 8)[0] == _BOM else "<"
            self._resync_pcapng(order)
            return order
        if not self._fill(total):
            if first:
                raise CaptureError(f"{self.name}: too short for its pcapng section header")
            self._note_tail("section header")
            return None
        self._advance(total)
        return order

    def _resync_pcapng(self, order: str) -> None:
        """Skip to the next block whose leading and trailing lengths agree."""
        self.damage.garbage_records += 1
        skipped = 0
        self._advance(4)
        skipped += 4
        while self._fill(12):
            buf, pos = self._buf, self._pos
            block_type, total = struct.unpack_from(order + "II", buf, pos)
            if (block_type in (1, 2, 3, 5, 6, 0x0A0D0D0A) and 12 <= total <= MAX_RECORD_BYTES + 64
                    and total % 4 == 0 and self._fill(total)
                    and struct.unpack_from(order + "I", self._buf, self._pos + total - 4)[0] == total):
                break
            self._advance(4)
            skipped += 4
        self.damage.garbage_bytes += skipped
        self.damage.details.append(f"garbage block, skipped {skipped} bytes")


def _options(buf: bytes, start: int, end: int, order: str) -> Iterator[tuple[int, bytes]]:
    """pcapng options (code, value) between start and end; stops at opt_endofopt."""
    pos = start
    while pos + 4 <= end:
        code, length = struct.unpack_from(order + "HH", buf, pos)
        if code == 0:
            return
        value = buf[pos + 4:pos + 4 + length]
        if pos + 4 + length > end:
            return
        yield code, value
        pos += 4 + ((length + 3) & ~3)
