"""Live capture on network interfaces with libpcap.

python-libpcap (the `pylibpcap` package we depend on) wraps libpcap, but its
`Sniff` class cannot set the kernel buffer size, does not say which link type
the handle has (an `any` capture is Linux cooked, not Ethernet), and a BPF
filter that does not compile is only printed as an ignored exception. So this
module calls the libpcap library that python-libpcap is built against
directly, through ctypes, in libpcap's create / set / activate order:
snaplen, promiscuous mode, buffer size, nanosecond timestamps where the
kernel has them, then the BPF filter compiled after activation.

Opening happens before privileges are dropped (beat/privileges.py); the
handle keeps working afterwards. Promiscuous mode is a packet-socket
membership on Linux, so CAP_NET_RAW covers it. Each interface has one capture
thread that hands frames to the main thread in batches
(beat/sources/feed.py). When the main thread falls behind, the thread waits:
the kernel buffer absorbs bursts and counts what it drops, and those counters
(`pcap_stats`) are read in the capture thread, because a libpcap handle is
not shared between threads.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import select
import threading
import time
from collections.abc import Callable
from typing import Any

from wirebeat import logs
from wirebeat.sources.feed import SourceError

__all__ = ["LiveSource", "libpcap_version"]

log = logs.get("live")

BATCH_FRAMES = 256
READ_TIMEOUT_MS = 200           # kernel block timeout, and how often the thread sees `stop`
STATS_PERIOD_S = 1.0
PCAP_ERRBUF_SIZE = 256
PCAP_NETMASK_UNKNOWN = 0xFFFFFFFF
PCAP_TSTAMP_PRECISION_NANO = 1
_ERRORS = {                     # pcap_activate() return values that need a hint
    -5: "no such device",
    -8: ("permission denied: live capture needs CAP_NET_RAW (run as root with --user, "
         "or grant the capability as deploy/systemd/wirebeat-live.conf does)"),
    -9: "interface is down",
    -11: "promiscuous mode not permitted (set wirebeat.interfaces.promiscuous: false)",
}


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _PacketHeader(ctypes.Structure):
    _fields_ = [("ts", _Timeval), ("caplen", ctypes.c_uint32), ("len", ctypes.c_uint32)]


class _Stat(ctypes.Structure):
    _fields_ = [("ps_recv", ctypes.c_uint), ("ps_drop", ctypes.c_uint), ("ps_ifdrop", ctypes.c_uint)]


class _BPFProgram(ctypes.Structure):
    _fields_ = [("bf_len", ctypes.c_uint), ("bf_insns", ctypes.c_void_p)]


_lib: Any = None


def _libpcap() -> Any:
    """The libpcap shared library, with the signatures used here. Raises SourceError."""
    global _lib
    if _lib is not None:
        return _lib
    name = ctypes.util.find_library("pcap") or "libpcap.so.0.8"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError:
        raise SourceError("live capture needs libpcap (Debian: apt-get install libpcap0.8)") from None
    handle, text = ctypes.c_void_p, ctypes.c_char_p
    signatures: dict[str, tuple[Any, list[Any]]] = {
        "pcap_create": (handle, [text, ctypes.c_char_p]),
        "pcap_set_snaplen": (ctypes.c_int, [handle, ctypes.c_int]),
        "pcap_set_promisc": (ctypes.c_int, [handle, ctypes.c_int]),
        "pcap_set_timeout": (ctypes.c_int, [handle, ctypes.c_int]),
        "pcap_set_buffer_size": (ctypes.c_int, [handle, ctypes.c_int]),
        "pcap_set_tstamp_precision": (ctypes.c_int, [handle, ctypes.c_int]),
        "pcap_get_tstamp_precision": (ctypes.c_int, [handle]),
        "pcap_activate": (ctypes.c_int, [handle]),
        "pcap_geterr": (text, [handle]),
        "pcap_statustostr": (text, [ctypes.c_int]),
        "pcap_datalink": (ctypes.c_int, [handle]),
        "pcap_datalink_val_to_name": (text, [ctypes.c_int]),
        "pcap_compile": (ctypes.c_int, [handle, ctypes.POINTER(_BPFProgram), text, ctypes.c_int,
                                        ctypes.c_uint32]),
        "pcap_setfilter": (ctypes.c_int, [handle, ctypes.POINTER(_BPFProgram)]),
        "pcap_freecode": (None, [ctypes.POINTER(_BPFProgram)]),
        "pcap_next_ex": (ctypes.c_int, [handle, ctypes.POINTER(ctypes.POINTER(_PacketHeader)),
                                        ctypes.POINTER(ctypes.c_void_p)]),
        "pcap_stats": (ctypes.c_int, [handle, ctypes.POINTER(_Stat)]),
        "pcap_breakloop": (None, [handle]),
        "pcap_close": (None, [handle]),
        "pcap_lib_version": (text, []),
        "pcap_setnonblock": (ctypes.c_int, [handle, ctypes.c_int, ctypes.c_char_p]),
        "pcap_get_selectable_fd": (ctypes.c_int, [handle]),
    }
    for function, (restype, argtypes) in signatures.items():
        f = getattr(lib, function)
        f.restype, f.argtypes = restype, argtypes
    _lib = lib
    return lib


def libpcap_version() -> str:
    return _libpcap().pcap_lib_version().decode()


class LiveSource:
    """One interface: a libpcap handle, its capture thread, and its counters."""

    kind = "interface"

    def __init__(self, device: str, snaplen: int, bpf_filter: str, promiscuous: bool,
                 buffer_size_mb: int) -> None:
        self.name = device
        self.device = device
        self.snaplen = snaplen
        self.bpf_filter = bpf_filter
        self.promiscuous = promiscuous
        self.buffer_size_mb = buffer_size_mb
        self.handle: int | None = None
        self.fd = -1
        self._lock = threading.Lock()        # closing vs. pcap_breakloop from the main thread
        self.linktype = 1
        self.scale = 1e-6
        self.frames = 0                 # handed to the engine (main thread)
        # Written by the capture thread, read for reports.
        self.received = 0               # pcap_stats ps_recv: packets the filter passed
        self.kernel_dropped = 0         # ps_drop: no room in the kernel buffer
        self.interface_dropped = 0      # ps_ifdrop: dropped by the interface or its driver
        self.last_seen: dict[str, tuple[float, float]] = {}   # name -> (packet ts, monotonic)

    def open(self) -> None:
        """Create and activate the handle, set the filter. Raises SourceError. Needs CAP_NET_RAW."""
        lib = _libpcap()
        errbuf = ctypes.create_string_buffer(PCAP_ERRBUF_SIZE)
        handle = lib.pcap_create(self.device.encode(), errbuf)
        if not handle:
            raise SourceError(f"interface {self.device}: {errbuf.value.decode(errors='replace')}")
        try:
            lib.pcap_set_snaplen(handle, self.snaplen)
            lib.pcap_set_promisc(handle, 1 if self.promiscuous else 0)
            lib.pcap_set_timeout(handle, READ_TIMEOUT_MS)
            lib.pcap_set_buffer_size(handle, self.buffer_size_mb * 1024 * 1024)
            lib.pcap_set_tstamp_precision(handle, PCAP_TSTAMP_PRECISION_NANO)   # best effort
            status = lib.pcap_activate(handle)
            if status < 0:
                detail = (lib.pcap_geterr(handle) or b"").decode(errors="replace")
                reason = _ERRORS.get(status) or detail or lib.pcap_statustostr(status).decode()
                if status == -8 and detail:
                    reason = f"{reason} ({detail})"
                raise SourceError(f"interface {self.device}: {reason}")
            if status > 0:
                log.warning("capture opened with a warning", interface=self.device,
                            warning=lib.pcap_statustostr(status).decode(),
                            detail=(lib.pcap_geterr(handle) or b"").decode(errors="replace"))
            if self.bpf_filter:
                program = _BPFProgram()
                if lib.pcap_compile(handle, ctypes.byref(program), self.bpf_filter.encode(), 1,
                                    PCAP_NETMASK_UNKNOWN) != 0:
                    detail = lib.pcap_geterr(handle).decode(errors="replace")
                    raise SourceError(f"interface {self.device}: bad bpf_filter "
                                      f"{self.bpf_filter!r}: {detail}")
                failed = lib.pcap_setfilter(handle, ctypes.byref(program)) != 0
                lib.pcap_freecode(ctypes.byref(program))
                if failed:
                    detail = lib.pcap_geterr(handle).decode(errors="replace")
                    raise SourceError(f"interface {self.device}: cannot set bpf_filter: {detail}")
        except BaseException:
            lib.pcap_close(handle)
            raise
        if lib.pcap_setnonblock(handle, 1, errbuf) != 0:
            lib.pcap_close(handle)
            raise SourceError(f"interface {self.device}: {errbuf.value.decode(errors='replace')}")
        self.fd = lib.pcap_get_selectable_fd(handle)
        self.handle = handle
        self.linktype = lib.pcap_datalink(handle)
        nano = lib.pcap_get_tstamp_precision(handle) == PCAP_TSTAMP_PRECISION_NANO
        self.scale = 1e-9 if nano else 1e-6
        link_name = lib.pcap_datalink_val_to_name(self.linktype)
        log.info("capturing", interface=self.device, linktype=self.linktype,
                 link=link_name.decode() if link_name else str(self.linktype),
                 snaplen=self.snaplen, promiscuous=self.promiscuous,
                 buffer_size_mb=self.buffer_size_mb, bpf_filter=self.bpf_filter or None,
                 timestamps="ns" if nano else "us")

    def interrupt(self) -> None:
        """Wake the capture thread (pcap_breakloop may be called from another thread)."""
        with self._lock:
            if self.handle is not None:
                _libpcap().pcap_breakloop(self.handle)

    def run(self, hand_over: Callable[[Any, list[Any], bool], bool], stop: threading.Event) -> None:
        """The capture thread: read packets, hand them over in batches until `stop`.

        The handle is non-blocking: pcap_next_ex takes what the kernel has
        handed over, and when nothing is left the partial batch goes to the
        main thread and the thread waits on the handle's descriptor (a
        blocking TPACKET_V3 read would sit on a partial batch until the next
        packet, however long that takes).
        """
        lib = _libpcap()
        handle = self.handle
        assert handle is not None
        header_p = ctypes.POINTER(_PacketHeader)()
        data_p = ctypes.c_void_p()
        next_ex, string_at = lib.pcap_next_ex, ctypes.string_at
        header_ref, data_ref = ctypes.byref(header_p), ctypes.byref(data_p)
        scale = self.scale
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        batch: list[tuple[float, bytes]] = []
        next_stats = time.monotonic() + STATS_PERIOD_S
        try:
            while not stop.is_set():
                status = next_ex(handle, header_ref, data_ref)
                if status == 1:
                    header = header_p.contents
                    batch.append((header.ts.tv_sec + header.ts.tv_usec * scale,
                                  string_at(data_p, header.caplen)))
                    if len(batch) < BATCH_FRAMES:
                        continue
                elif status == -2:            # pcap_breakloop: stopping
                    break
                elif status < 0:
                    detail = (lib.pcap_geterr(handle) or b"").decode(errors="replace")
                    log.error("capture failed", interface=self.device, error=detail)
                    raise SourceError(f"interface {self.device}: {detail}")
                if batch:
                    if not hand_over(self, batch, True):
                        break
                    batch = []
                now = time.monotonic()
                if now >= next_stats:
                    next_stats = now + STATS_PERIOD_S
                    self._read_stats()
                if status == 0:               # nothing ready: wait for the kernel
                    poller.poll(READ_TIMEOUT_MS)
        finally:
            if batch:                         # stopping: the main thread still drains the queue
                hand_over(self, batch, False)
            self._read_stats()
            with self._lock:
                self.handle = None
                lib.pcap_close(handle)

    def _read_stats(self) -> None:
        stat = _Stat()
        if self.handle is not None and _libpcap().pcap_stats(self.handle, ctypes.byref(stat)) == 0:
            self.received, self.kernel_dropped, self.interface_dropped = (
                stat.ps_recv, stat.ps_drop, stat.ps_ifdrop)

    def deliver(self, batch: list[tuple[float, bytes]],
                on_frame: Callable[[float, int, bytes, str], None], on_event: Any) -> None:
        """Main thread: hand a batch of frames to the engine."""
        name, linktype = self.name, self.linktype
        for ts, data in batch:
            on_frame(ts, linktype, data, name)
        self.frames += len(batch)
        self.last_seen[name] = (batch[-1][0], time.monotonic())

    def counters(self) -> dict[str, int]:
        prefix = f"interface.{self.device}."
        return {prefix + "received": self.received, prefix + "kernel_dropped": self.kernel_dropped,
                prefix + "interface_dropped": self.interface_dropped, prefix + "frames": self.frames}

    def summary(self) -> str:
        return (f"interface {self.device}: {self.received} received, {self.kernel_dropped} dropped "
                f"by the kernel, {self.interface_dropped} by the interface")
