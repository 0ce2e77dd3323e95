"""TLS handshakes (TLS 1.0-1.2 RFC 5246, TLS 1.3 RFC 8446), one document per session.

Decoded from the reassembled TCP stream, never decrypted: the record layer of
each direction is followed (records split across segments, several handshake
messages per record, one message across records), and the plaintext part of
the handshake is read: ClientHello, ServerHello (and HelloRetryRequest, RFC
8446 §4.1.4), Certificate, CertificateRequest, ChangeCipherSpec and alerts.
The bodies of application-data and encrypted records are skipped as they pass,
never buffered or stored.

In TLS 1.3 everything after the ServerHello is encrypted, certificates
included: a TLS 1.3 session has no `tls.server.x509.*` (nor client certificate)
fields, and no `tls.next_protocol` (the server's ALPN answer travels in the
encrypted EncryptedExtensions), because the wire does not show them. Alerts
sent after encryption started cannot be read either (they are counted as
`decoder.tls.encrypted_alerts`).

A session is reported once, when the handshake is complete (TLS 1.2: both
sides sent ChangeCipherSpec; TLS 1.3: the client sent its first encrypted
record after the ServerHello), or else when the connection closes or the
handshake times out (`transaction_timeout` after its first byte), then with
`tls.established: false` and status Error. After that the connection costs
nothing: the decoder tells the engine it needs no more bytes (`needs_bytes`,
`needs_expire`), so later segments are not even reassembled. The same holds
once the framing of both directions is lost (a gap, a bad record): nothing
more can be read, so no bytes are needed, and the session is still reported at
close or timeout if a hello was seen (if none was, there is nothing to report
and the decoder is done).

Fields follow packetbeat 8 (`tls.*` ECS part, `tls.detailed.*`, x509 as ECS
`tls.server.x509.*`), plus fields packetbeat does not have: `tls.client.ja4`
and `tls.server.ja4s` (FoxIO's JA4/JA4S) and `tls.detailed.hello_retry_request`.
JA3 and JA4 are computed from the first ClientHello of the connection (after a
HelloRetryRequest the client sends a second one that differs in its key
shares). Certificates are parsed by the `cryptography` package. Not decoded: SSL 2.0-format hellos, renegotiation,
stapled OCSP responses (`tls.detailed.ocsp_response`), DTLS and QUIC.

Detection: a TCP connection on no configured port whose first client bytes
are a ClientHello record (`looks_like_client_hello`) is handed to this decoder
when `wirebeat.protocols.tls.detect` is true (the default).
"""
from __future__ import annotations

import struct
import sys
from array import array
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from wirebeat.decoders.api import (DecodeError, DecoderSpec, FlowKey, Option, Transaction,
                                   Truncated, WireReader)
from wirebeat.decoders.tls_names import (ALERTS, CIPHER_SUITES, EC_POINT_FORMATS, EXTENSIONS,
                                         GROUPS, SIGNATURE_SCHEMES, is_grease, name_of)

__all__ = ["DECODER", "ClientHello", "ServerHello", "TLSSession", "TLSStream", "document", "ja3",
           "ja3s", "ja4", "ja4s", "looks_like_client_hello", "parse_client_hello",
           "parse_server_hello"]

# Record content types (RFC 8446 §5.1)
CHANGE_CIPHER_SPEC, ALERT, HANDSHAKE, APPLICATION_DATA, HEARTBEAT = 20, 21, 22, 23, 24
# Handshake message types (RFC 8446 §4)
CLIENT_HELLO, SERVER_HELLO, CERTIFICATE, CERTIFICATE_REQUEST, SERVER_HELLO_DONE = 1, 2, 11, 13, 14
MAX_RECORD_BYTES = (1 << 14) + 2048     # RFC 5246 §6.2.3: ciphertext may exceed 2^14 by 2048
# RFC 8446 §4.1.3: a ServerHello with this random is a HelloRetryRequest.
HRR_RANDOM = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")
TLS13 = 0x0304
_LITTLE_ENDIAN = sys.byteorder == "little"
_TYPE_LENGTH = struct.Struct("!HH").unpack_from       # an extension's type and length


def looks_like_client_hello(data: bytes) -> bool:
    """Whether a connection's first client bytes start a TLS handshake record holding a ClientHello.

    Reads six bytes: record type 22, version 3.x (x <= 4), a non-trivial length,
    handshake type 1. Cheap, pure and never raising (the engine's `detect` contract).
    """
    return (len(data) >= 6 and data[0] == HANDSHAKE and data[1] == 3 and data[2] <= 4
            and data[5] == CLIENT_HELLO and 4 <= (data[3] << 8 | data[4]) <= MAX_RECORD_BYTES)


# -- hello messages -------------------------------------------------------------


@dataclass(slots=True)
class ClientHello:
    """What a ClientHello says (RFC 8446 section 4.1.2)."""

    version: int                        # legacy_version
    random: bytes
    session_id: bytes
    ciphers: list[int]                  # as sent, GREASE included
    compression_methods: list[int]
    extensions: list[int]               # extension types in order, GREASE included
    server_names: list[str] = field(default_factory=list)
    alpn: list[str] = field(default_factory=list)
    supported_versions: list[int] = field(default_factory=list)
    groups: list[int] = field(default_factory=list)
    point_formats: list[int] = field(default_factory=list)
    signature_algorithms: list[int] = field(default_factory=list)
    session_ticket: bytes | None = None     # None: extension absent; b"": support advertised
    status_request: bool = False


@dataclass(slots=True)
class ServerHello:
    """What a ServerHello says (RFC 8446 section 4.1.3)."""

    version: int                        # legacy_version
    random: bytes
    session_id: bytes
    cipher: int
    compression_method: int
    extensions: list[int]
    alpn: str | None = None
    selected_version: int | None = None     # supported_versions (TLS 1.3)
    point_formats: list[int] = field(default_factory=list)
    session_ticket: bool = False
    pre_shared_key: bool = False
    status_request: bool = False

    @property
    def is_retry_request(self) -> bool:
        return self.random == HRR_RANDOM

    @property
    def negotiated_version(self) -> int:
        return self.selected_version or self.version


def _u16_list(r: WireReader) -> list[int]:
    n = r.u16()
    if n % 2:
        raise DecodeError("tls.odd_list_length", r.offset)
    return _u16_values(r.take(n))


def _u16_list_in(data: bytes, width: int) -> list[int]:
    """The list of 16-bit values at the start of an extension's data, after its length
    (`width` bytes)."""
    if width > len(data):
        raise Truncated("tls.truncated", 0)
    n = data[0] if width == 1 else data[0] << 8 | data[1]
    if n % 2:
        raise DecodeError("tls.odd_list_length", width)
    if width + n > len(data):
        raise Truncated("tls.truncated", width)
    return _u16_values(data[width:width + n])


def _u16_values(data: bytes) -> list[int]:
    values = array("H", data)      # one C call for a whole list (cipher suites: dozens)
    if _LITTLE_ENDIAN:
        values.byteswap()
    return values.tolist()


def _u8_list(r: WireReader) -> list[int]:
    return list(r.take(r.u8()))


def _alpn_list(data: bytes) -> list[str]:
    """An ALPN extension's protocol_name_list (RFC 7301 §3.1)."""
    names = []
    i, end = 2, _sized(data, 0, 2)
    while i < end:
        n = data[i]
        if i + 1 + n > end:
            raise Truncated("tls.truncated", i)
        names.append(data[i + 1:i + 1 + n].decode("latin-1"))  # bytes kept: JA4 reads them
        i += 1 + n
    return names


def _sized(data: bytes, at: int, width: int) -> int:
    """The end of the part at `at` whose length is the `width`-byte number there (1 or 2)."""
    if at + width > len(data):
        raise Truncated("tls.truncated", at)
    end = at + width + (data[at] if width == 1 else data[at] << 8 | data[at + 1])
    if end > len(data):
        raise Truncated("tls.truncated", at + width)
    return end


def _extensions(r: WireReader) -> list[tuple[int, bytes]]:
    """(type, data) per extension; no extensions block means none."""
    if not r.remaining():
        return []
    block = r.take(r.u16())
    out, i, n = [], 0, len(block)
    while i < n:
        if i + 4 > n:
            raise Truncated("tls.truncated", i)
        ext_type, length = _TYPE_LENGTH(block, i)
        if i + 4 + length > n:
            raise Truncated("tls.truncated", i + 4)
        out.append((ext_type, block[i + 4:i + 4 + length]))
        i += 4 + length
    return out


def _server_names(data: bytes) -> list[str]:
    """The host names of a server_name extension (RFC 6066 §3)."""
    names = []
    if not data:
        return names
    i, end = 2, _sized(data, 0, 2)
    while i < end:
        if i + 3 > end:
            raise Truncated("tls.truncated", i)
        name_type, n = data[i], data[i + 1] << 8 | data[i + 2]
        if i + 3 + n > end:
            raise Truncated("tls.truncated", i + 3)
        if name_type == 0:
            names.append(data[i + 3:i + 3 + n].decode("ascii", "replace"))
        i += 3 + n
    return names


def parse_client_hello(body: bytes) -> ClientHello:
    """A ClientHello handshake body (after the 4-byte message header). Raises DecodeError."""
    r = WireReader(body, "tls")
    hello = ClientHello(r.u16(), r.take(32), r.take(r.u8()), _u16_list(r), _u8_list(r), [])
    for ext_type, e in _extensions(r):
        hello.extensions.append(ext_type)
        if ext_type == 0:
            hello.server_names += _server_names(e)
        elif ext_type == 16:
            hello.alpn = _alpn_list(e)
        elif ext_type == 43:
            hello.supported_versions = _u16_list_in(e, 1)
        elif ext_type == 10:
            hello.groups = _u16_list_in(e, 2)
        elif ext_type == 11:
            hello.point_formats = list(e[1:_sized(e, 0, 1)])
        elif ext_type == 13:
            hello.signature_algorithms = _u16_list_in(e, 2)
        elif ext_type == 35:
            hello.session_ticket = e
        elif ext_type == 5:
            hello.status_request = True
    return hello


def parse_server_hello(body: bytes) -> ServerHello:
    """A ServerHello (or HelloRetryRequest) body. Raises DecodeError."""
    r = WireReader(body, "tls")
    hello = ServerHello(r.u16(), r.take(32), r.take(r.u8()), r.u16(), r.u8(), [])
    for ext_type, e in _extensions(r):
        hello.extensions.append(ext_type)
        if ext_type == 16:
            names = _alpn_list(e)
            hello.alpn = names[0] if names else None
        elif ext_type == 43:
            if len(e) < 2:
                raise Truncated("tls.truncated", 0)
            hello.selected_version = e[0] << 8 | e[1]
        elif ext_type == 11:
            hello.point_formats = list(e[1:_sized(e, 0, 1)])
        elif ext_type == 35:
            hello.session_ticket = True
        elif ext_type == 41:
            hello.pre_shared_key = True
        elif ext_type == 5:
            hello.status_request = True
    return hello


def parse_certificates(body: bytes, tls13: bool) -> list[bytes]:
    """DER certificates of a Certificate message, leaf first (RFC 5246 §7.4.2, RFC 8446 §4.4.2)."""
    r = WireReader(body, "tls")
    if tls13:
        r.skip(r.u8())                      # certificate_request_context
    certs = []
    with r.exactly(_u24(r)):
        while r.remaining():
            certs.append(r.take(_u24(r)))
            if tls13:
                r.skip(r.u16())             # per-certificate extensions
    return certs


def _u24(r: WireReader) -> int:
    return r.u8() << 16 | r.u16()


# -- fingerprints ---------------------------------------------------------------


def _no_grease(values: list[int]) -> list[int]:
    return [v for v in values if not is_grease(v)]


def ja3(hello: ClientHello) -> str:
    """The JA3 string (salesforce/ja3): version,ciphers,extensions,groups,point formats; GREASE left out."""
    return ",".join((str(hello.version),
                     "-".join(map(str, _no_grease(hello.ciphers))),
                     "-".join(map(str, _no_grease(hello.extensions))),
                     "-".join(map(str, _no_grease(hello.groups))),
                     "-".join(map(str, hello.point_formats))))


@lru_cache(maxsize=4096)
def _fingerprints(version: int, ciphers: tuple[int, ...], extensions: tuple[int, ...],
                  groups: tuple[int, ...], point_formats: tuple[int, ...],
                  supported_versions: tuple[int, ...], alpn: str | None,
                  signature_algorithms: tuple[int, ...]) -> tuple[str, str]:
    """(JA3 hash, JA4) of a ClientHello with these values: what they read of it. A client
    stack sends the same ones on every connection, so they are worked out once."""
    hello = ClientHello(version, b"", b"", list(ciphers), [], list(extensions),
                        alpn=[alpn] if alpn is not None else [],
                        supported_versions=list(supported_versions), groups=list(groups),
                        point_formats=list(point_formats),
                        signature_algorithms=list(signature_algorithms))
    import hashlib      # here, not at the top: its import loads OpenSSL (wirebeat.hashes)
    return hashlib.md5(ja3(hello).encode()).hexdigest(), ja4(hello)


def ja3s(hello: ServerHello) -> str:
    """The JA3S string: version,cipher,extensions."""
    return ",".join((str(hello.version), str(hello.cipher),
                     "-".join(map(str, _no_grease(hello.extensions)))))


_JA4_VERSIONS = {0x0304: "13", 0x0303: "12", 0x0302: "11", 0x0301: "10", 0x0300: "s3",
                 0x0002: "s2", 0xFEFF: "d1", 0xFEFD: "d2", 0xFEFC: "d3"}


def _sha256_12(text: str) -> str:
    import hashlib      # here, not at the top: its import loads OpenSSL (wirebeat.hashes)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _ja4_alpn(value: str | None) -> str:
    """First and last character of an ALPN id; hex nibbles where those are not alphanumeric."""
    if not value:
        return "00"
    raw = value.encode("latin-1", "replace")
    first, last = raw[:1], raw[-1:]
    if first.isalnum() and last.isalnum() and first.isascii() and last.isascii():
        return (first + last).decode()
    return f"{raw[0] >> 4:x}{raw[-1] & 0xF:x}"


def ja4(hello: ClientHello) -> str:
    """FoxIO JA4 (technical_details/JA4.md) for TLS over TCP."""
    versions = _no_grease(hello.supported_versions)
    version = max(versions) if versions else hello.version
    ciphers = _no_grease(hello.ciphers)
    extensions = _no_grease(hello.extensions)
    head = (f"t{_JA4_VERSIONS.get(version, '00')}{'d' if 0 in extensions else 'i'}"
            f"{min(len(ciphers), 99):02d}{min(len(extensions), 99):02d}"
            f"{_ja4_alpn(hello.alpn[0] if hello.alpn else None)}")
    cipher_part = (_sha256_12(",".join(sorted(f"{c:04x}" for c in ciphers)))
                   if ciphers else "000000000000")
    ext_list = ",".join(sorted(f"{e:04x}" for e in extensions if e not in (0, 16)))
    if ext_list:
        sigs = ",".join(f"{s:04x}" for s in _no_grease(hello.signature_algorithms))
        ext_part = _sha256_12(f"{ext_list}_{sigs}" if sigs else ext_list)
    else:
        ext_part = "000000000000"
    return f"{head}_{cipher_part}_{ext_part}"


def ja4s(hello: ServerHello) -> str:
    """FoxIO JA4S (technical_details/JA4S.md) for TLS over TCP."""
    extensions = _no_grease(hello.extensions)
    head = (f"t{_JA4_VERSIONS.get(hello.negotiated_version, '00')}{min(len(extensions), 99):02d}"
            f"{_ja4_alpn(hello.alpn)}")
    ext_part = (_sha256_12(",".join(f"{e:04x}" for e in extensions))
                if extensions else "000000000000")
    return f"{head}_{hello.cipher:04x}_{ext_part}"


# -- certificates ---------------------------------------------------------------

def x509_fields(der: bytes) -> dict[str, Any]:
    """ECS x509.* of one DER certificate. Raises DecodeError("tls.bad_certificate")."""
    from wirebeat.decoders.tls_x509 import x509_fields as fields    # cryptography: slow to import
    return fields(der)


# -- the session ----------------------------------------------------------------


@dataclass(slots=True)
class TLSSession:
    """What one connection's handshake showed: the detail of its Transaction."""

    client_hello: ClientHello | None = None      # the first one (JA3/JA4 are computed from it)
    server_hello: ServerHello | None = None      # the one that is not a HelloRetryRequest
    retry_requested: bool = False                # a HelloRetryRequest came first
    server_certificates: list[bytes] = field(default_factory=list)
    client_certificates: list[bytes] = field(default_factory=list)
    client_certificate_requested: bool = False
    alerts: list[tuple[bool, int, int]] = field(default_factory=list)   # (from_client, level, description)
    established: bool = False
    resumed: bool = False
    resumption_method: str | None = None


class _Direction:
    """The record layer of one direction."""

    __slots__ = ("header", "content_type", "body", "need", "skip", "handshake", "ccs", "encrypted",
                 "lost", "server_hello_done")

    def __init__(self) -> None:
        self.header = bytearray()       # a record header being collected (< 5 bytes)
        self.content_type = 0
        self.body = bytearray()         # a plaintext handshake/alert/CCS record being collected
        self.need = 0                   # bytes of that record still to come
        self.skip = 0                   # bytes of an encrypted record still to pass over
        self.handshake = bytearray()    # handshake messages not yet complete
        self.ccs = False                # sent ChangeCipherSpec
        self.encrypted = False          # what follows is encrypted (after CCS, or TLS 1.3 server)
        self.lost = False               # framing lost (a gap, a bad header): nothing more is read
        self.server_hello_done = False


class TLSStream:
    """One TCP connection's TLS handshake; reports one transaction."""

    def __init__(self, flow: FlowKey, options: dict[str, Any]) -> None:
        self.flow = flow
        self.timeout_s = options.get("transaction_timeout", 10.0)
        self.max_message_bytes = options.get("max_handshake_message_bytes", 65536)
        self.session = TLSSession()
        self.client = _Direction()
        self.server = _Direction()
        self.first_ts: float | None = None
        self.last_ts = 0.0
        self.done = False
        self.needs_bytes = True         # read by the engine: False stops on_data/on_gap
        self.needs_expire = True        # ... and False stops expire
        self.notes: list[str] = []
        self.counters: dict[str, int] = {}

    # -- StreamDecoder ----------------------------------------------------------

    def on_data(self, from_client: bool, data: bytes, ts: float) -> list[Transaction]:
        if self.done:
            return []
        if self.first_ts is None:
            self.first_ts = ts
        d = self.client if from_client else self.server
        if d.lost:
            return []
        try:
            self._feed(d, from_client, data, ts)
        except DecodeError as err:
            self._lose(d, err.reason)
        return self._report(ts) if self.session.established else []

    def on_gap(self, from_client: bool, missing: int, ts: float) -> list[Transaction]:
        d = self.client if from_client else self.server
        if self.done or d.lost:
            return []
        if d.skip >= missing and not d.header:     # inside an encrypted record: still in step
            d.skip -= missing
            return []
        self._lose(d, "tls.gap")
        return []

    def on_close(self, ts: float) -> list[Transaction]:
        return self._report(self.last_ts or ts)

    def expire(self, now: float) -> list[Transaction]:
        if self.done or self.first_ts is None or now < self.first_ts + self.timeout_s:
            return []
        self._note("tls.handshake_timeout")
        return self._report(self.last_ts)

    def _lose(self, d: _Direction, note: str) -> None:
        """The framing of direction `d` is lost: nothing more of it is read."""
        d.lost = True
        self._note(note)
        if self.client.lost and self.server.lost:
            self.needs_bytes = False    # the close or a timeout may still report a hello seen
            if self.session.client_hello is None and self.session.server_hello is None:
                self._report(self.last_ts)      # nothing to report, ever: done

    # -- the record layer -------------------------------------------------------

    def _feed(self, d: _Direction, from_client: bool, data: bytes, ts: float) -> None:
        i, n = 0, len(data)
        while i < n:
            if d.skip:
                k = min(d.skip, n - i)
                d.skip -= k
                i += k
                continue
            if d.need:
                k = min(d.need, n - i)
                d.body += data[i:i + k]
                d.need -= k
                i += k
                if not d.need:
                    body, d.body = bytes(d.body), bytearray()
                    self._record(d, from_client, d.content_type, body, ts)
                    if d.lost or self.session.established:
                        return
                continue
            k = min(5 - len(d.header), n - i)
            d.header += data[i:i + k]
            i += k
            if len(d.header) < 5:
                return
            content_type, major, length = d.header[0], d.header[1], d.header[3] << 8 | d.header[4]
            d.header.clear()
            if not CHANGE_CIPHER_SPEC <= content_type <= HEARTBEAT or major != 3 \
                    or length > MAX_RECORD_BYTES:
                raise DecodeError("tls.bad_record_header")
            self.last_ts = ts
            if content_type == APPLICATION_DATA or content_type == HEARTBEAT or \
                    (d.encrypted and content_type != CHANGE_CIPHER_SPEC):
                # Never read: application data, and anything sent encrypted.
                d.skip = length
                self._encrypted_record(d, from_client, content_type)
                if self.session.established:
                    return
                continue
            d.content_type, d.need = content_type, length
            if not length:
                self._record(d, from_client, content_type, b"", ts)

    def _encrypted_record(self, d: _Direction, from_client: bool, content_type: int) -> None:
        hello = self.session.server_hello
        if content_type == ALERT:
            self.counters["encrypted_alerts"] = self.counters.get("encrypted_alerts", 0) + 1
        if from_client and hello is not None and hello.negotiated_version == TLS13 \
                and content_type == APPLICATION_DATA:
            self.session.established = True     # the client's encrypted Finished (RFC 8446 §4.4.4)

    def _record(self, d: _Direction, from_client: bool, content_type: int, body: bytes,
                ts: float) -> None:
        session = self.session
        if content_type == HANDSHAKE:
            d.handshake += body
            self._handshake_messages(d, from_client)
        elif content_type == ALERT:
            if len(body) >= 2:
                session.alerts.append((from_client, body[0], body[1]))
        elif content_type == CHANGE_CIPHER_SPEC:
            d.ccs = True
            hello = session.server_hello
            # TLS 1.3 sends it only for middlebox compatibility (RFC 8446 D.4), also right
            # after a HelloRetryRequest: the real ServerHello still follows in plaintext.
            if not session.retry_requested and (hello is None or hello.negotiated_version != TLS13):
                d.encrypted = True
            if not from_client and hello is not None and hello.negotiated_version != TLS13 \
                    and not self.server.server_hello_done:
                # TLS <= 1.2: straight from ServerHello to ChangeCipherSpec is an abbreviated
                # handshake (RFC 5246 §7.3, RFC 5077 §3.1).
                session.resumed = True
                ticket = session.client_hello.session_ticket if session.client_hello else None
                session.resumption_method = "ticket" if ticket else "id"
            if self.client.ccs and self.server.ccs and hello is not None \
                    and hello.negotiated_version != TLS13:
                session.established = True

    def _handshake_messages(self, d: _Direction, from_client: bool) -> None:
        buf = d.handshake
        while len(buf) >= 4:
            length = buf[1] << 16 | buf[2] << 8 | buf[3]
            if length > self.max_message_bytes:
                self.counters["oversized_messages"] = self.counters.get("oversized_messages", 0) + 1
                raise DecodeError("tls.handshake_message_too_large")
            if len(buf) < 4 + length:
                return
            msg_type, body = buf[0], bytes(buf[4:4 + length])
            del buf[:4 + length]
            self._handshake(d, from_client, msg_type, body)
            if d.encrypted:         # TLS 1.3: the rest of the server's flight is encrypted
                buf.clear()
                return

    def _handshake(self, d: _Direction, from_client: bool, msg_type: int, body: bytes) -> None:
        session = self.session
        if from_client:
            if msg_type == CLIENT_HELLO and session.client_hello is None:
                session.client_hello = parse_client_hello(body)
            elif msg_type == CERTIFICATE:
                session.client_certificates = parse_certificates(body, tls13=False)
            return
        if msg_type == SERVER_HELLO:
            hello = parse_server_hello(body)
            if hello.is_retry_request:
                session.retry_requested = True
                return
            session.server_hello = hello
            if hello.negotiated_version == TLS13:
                d.encrypted = True
                if hello.pre_shared_key:
                    session.resumed, session.resumption_method = True, "ticket"
        elif msg_type == CERTIFICATE:
            session.server_certificates = parse_certificates(body, tls13=False)
        elif msg_type == CERTIFICATE_REQUEST:
            session.client_certificate_requested = True
        elif msg_type == SERVER_HELLO_DONE:
            d.server_hello_done = True

    # -- reporting --------------------------------------------------------------

    def _note(self, note: str) -> None:
        if note not in self.notes:
            self.notes.append(note)

    def _report(self, end_ts: float) -> list[Transaction]:
        if self.done:
            return []
        self.done = True
        self.needs_bytes = self.needs_expire = False
        session = self.session
        self.client.handshake.clear()
        self.server.handshake.clear()
        if session.client_hello is None and session.server_hello is None:
            return []
        return [Transaction(self.flow, self.first_ts or end_ts, max(end_ts, self.first_ts or end_ts),
                            "OK" if session.established else "Error", session,
                            notes=tuple(self.notes))]


# -- the document ---------------------------------------------------------------

_VERSIONS = {0x0300: ("ssl", "3.0"), 0x0301: ("tls", "1.0"), 0x0302: ("tls", "1.1"),
             0x0303: ("tls", "1.2"), 0x0304: ("tls", "1.3")}


@lru_cache(maxsize=256)
def _version_name(version: int) -> str:
    protocol, number = _VERSIONS.get(version, ("unknown", f"0x{version:04x}"))
    return f"{protocol.upper()} {number}"


_TABLES = {"ciphers": CIPHER_SUITES, "groups": GROUPS, "signatures": SIGNATURE_SCHEMES,
           "point_formats": EC_POINT_FORMATS}


@lru_cache(maxsize=4096)
def _names_of(table: str, values: tuple[int, ...]) -> tuple[str, ...]:
    # A client stack sends the same lists on every connection: named once per list.
    names = _TABLES[table]
    return tuple(name_of(names, v) for v in values if not is_grease(v))


def _names(table: str, values: list[int]) -> list[str]:
    """The names of `values` in one of _TABLES, GREASE left out; a new list per document."""
    return list(_names_of(table, tuple(values)))


@lru_cache(maxsize=4096)
def _server_fingerprints(version: int, cipher: int, extensions: tuple[int, ...], alpn: str | None,
                         selected_version: int | None) -> tuple[str, str]:
    """(JA3S hash, JA4S) of a ServerHello with these values, worked out once per server stack."""
    hello = ServerHello(version, b"", b"", cipher, 0, list(extensions), alpn=alpn,
                        selected_version=selected_version)
    import hashlib      # here, not at the top: its import loads OpenSSL (wirebeat.hashes)
    return hashlib.md5(ja3s(hello).encode()).hexdigest(), ja4s(hello)


def _certificate(prefix: dict[str, Any], certs: list[bytes], detailed: dict[str, Any],
                 chain_key: str) -> list[str]:
    """Fill tls.<side>.{x509,subject,issuer,not_*,hash} from a chain; returns notes."""
    if not certs:
        return []
    try:
        leaf = x509_fields(certs[0])
    except DecodeError as err:
        return [err.reason]
    prefix["x509"] = leaf
    prefix["subject"] = leaf["subject"]["distinguished_name"]
    prefix["issuer"] = leaf["issuer"]["distinguished_name"]
    prefix["not_before"], prefix["not_after"] = leaf["not_before"], leaf["not_after"]
    import hashlib      # here, not at the top: its import loads OpenSSL (wirebeat.hashes)
    prefix["hash"] = {"sha1": hashlib.sha1(certs[0]).hexdigest().upper(),
                      "sha256": hashlib.sha256(certs[0]).hexdigest().upper()}
    chain, notes = [], []
    for der in certs[1:]:
        try:
            chain.append(x509_fields(der))
        except DecodeError as err:
            notes.append(err.reason)
    if chain:
        detailed[chain_key] = chain
    return notes


def _hello_detail(hello: ClientHello | ServerHello, extensions: dict[str, Any],
                  parsed: set[int]) -> dict[str, Any]:
    """tls.detailed.client_hello / server_hello: what both hellos have."""
    unparsed = [name_of(EXTENSIONS, e) for e in hello.extensions
                if e not in parsed and not is_grease(e)]
    if unparsed:
        extensions["_unparsed_"] = unparsed
    return {"version": f"{hello.version >> 8}.{hello.version & 0xFF}", "random": hello.random.hex(),
            "session_id": hello.session_id.hex(), "extensions": extensions}


def document(txn: Transaction) -> dict[str, Any]:
    """packetbeat's TLS fields (ECS tls.*, tls.detailed.*) plus JA4/JA4S."""
    session: TLSSession = txn.detail
    ch, sh = session.client_hello, session.server_hello
    tls: dict[str, Any] = {"established": session.established, "resumed": session.resumed}
    client: dict[str, Any] = {}
    server: dict[str, Any] = {}
    detailed: dict[str, Any] = {"client_certificate_requested": session.client_certificate_requested}
    doc: dict[str, Any] = {"tls": tls}
    if ch is not None:
        if ch.server_names:
            client["server_name"] = ch.server_names[0]
            doc["destination"] = {"domain": ch.server_names[0]}
            doc["server"] = {"domain": ch.server_names[0]}
        client["ja3"], client["ja4"] = _fingerprints(
            ch.version, tuple(ch.ciphers), tuple(ch.extensions), tuple(ch.groups),
            tuple(ch.point_formats), tuple(ch.supported_versions), ch.alpn[0] if ch.alpn else None,
            tuple(ch.signature_algorithms))
        client["supported_ciphers"] = _names("ciphers", ch.ciphers)
        extensions: dict[str, Any] = {}
        if ch.server_names:
            extensions["server_name_indication"] = ch.server_names
        if ch.alpn:
            extensions["application_layer_protocol_negotiation"] = ch.alpn
        if ch.session_ticket is not None:
            extensions["session_ticket"] = str(len(ch.session_ticket)) if ch.session_ticket else ""
        if ch.supported_versions:
            extensions["supported_versions"] = [_version_name(v) for v in ch.supported_versions
                                                if not is_grease(v)]
        if ch.groups:
            extensions["supported_groups"] = _names("groups", ch.groups)
        if ch.signature_algorithms:
            extensions["signature_algorithms"] = _names("signatures", ch.signature_algorithms)
        if ch.point_formats:
            extensions["ec_points_formats"] = _names("point_formats", ch.point_formats)
        if ch.status_request:
            extensions["status_request"] = {"type": "ocsp"}
        detailed["client_hello"] = _hello_detail(ch, extensions, {0, 5, 10, 11, 13, 16, 35, 43})
        detailed["client_hello"]["supported_compression_methods"] = [
            "NULL" if m == 0 else str(m) for m in ch.compression_methods]
    if sh is not None:
        protocol, number = _VERSIONS.get(sh.negotiated_version, ("unknown", ""))
        if number:
            tls["version"], tls["version_protocol"] = number, protocol
        detailed["version"] = _version_name(sh.negotiated_version)
        tls["cipher"] = name_of(CIPHER_SUITES, sh.cipher)
        if sh.alpn:
            tls["next_protocol"] = sh.alpn
        server["ja3s"], server["ja4s"] = _server_fingerprints(
            sh.version, sh.cipher, tuple(sh.extensions), sh.alpn, sh.selected_version)
        extensions = {}
        if sh.alpn:
            extensions["application_layer_protocol_negotiation"] = [sh.alpn]
        if sh.session_ticket:
            extensions["session_ticket"] = ""
        if sh.selected_version:
            extensions["supported_versions"] = _version_name(sh.selected_version)
        if sh.point_formats:
            extensions["ec_points_formats"] = _names("point_formats", sh.point_formats)
        if sh.status_request:
            extensions["status_request"] = {"response": True}
        detailed["server_hello"] = _hello_detail(sh, extensions, {5, 11, 16, 35, 43})
        detailed["server_hello"]["selected_compression_method"] = (
            "NULL" if sh.compression_method == 0 else str(sh.compression_method))
    if session.resumption_method:
        detailed["resumption_method"] = session.resumption_method
    if session.retry_requested:
        detailed["hello_retry_request"] = True
    if session.alerts:
        detailed["alert_types"] = [name_of(ALERTS, desc) for _, _, desc in session.alerts]
    notes = _certificate(server, session.server_certificates, detailed, "server_certificate_chain")
    notes += _certificate(client, session.client_certificates, detailed, "client_certificate_chain")
    if client:
        tls["client"] = client
    if server:
        tls["server"] = server
    tls["detailed"] = detailed
    if notes:
        all_notes = [*txn.notes, *notes]
        doc["error"] = {"message": all_notes[0] if len(all_notes) == 1 else all_notes}
    return doc


DECODER = DecoderSpec(
    name="tls",
    document=document,
    stream=TLSStream,
    # packetbeat's default TLS ports
    ports=(443, 993, 995, 5223, 8443, 8883, 9243),
    options={"max_handshake_message_bytes": Option(
        "int", 65536, "handshake messages longer than this (a huge certificate chain) end "
        "decoding of the connection's direction; counted as decoder.tls.oversized_messages")},
    detect=looks_like_client_hello,
    lazy_imports=("wirebeat.decoders.tls_x509",),
)
