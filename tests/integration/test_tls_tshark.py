"""TLS documents of the real captures agree with tshark's and openssl's reading of them.

The captures in pcaps/tls/ were recorded from openssl s_server/s_client and
curl (pcaps/tls/make_captures.sh). Each is decoded by the real command line
(`wirebeat run -I FILE --console --strict`) and by tshark, the independent
oracle, per TCP connection (matched by client port):

- SNI, negotiated version, cipher suite (tshark's IANA name), offered cipher
  suites (names, GREASE left out), server's ALPN, alert descriptions;
- JA3 and JA3S equal tshark's `tls.handshake.ja3` / `ja3s`;
- JA4 and JA4S recomputed here from tshark's dissected values (cipher and
  extension code points, signature algorithms, supported versions, ALPN) by
  FoxIO's published algorithm, written again for this test;
- certificates: the DER bytes tshark extracted are read by the `openssl x509`
  command (not by the `cryptography` package the decoder uses): subject DN,
  issuer DN, serial, validity, SAN, key size, SHA-1/SHA-256 fingerprints.

Port 14433 is on no configured port, so those captures also show detection;
tshark is told with `-d tcp.port==14433,tls`.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

import pytest

from conftest import PCAPS, decode_file

CAPTURES = sorted((PCAPS / "tls").glob("*.pcap"))
SERVER_PORTS = {8443, 14433}


@pytest.fixture(scope="module", autouse=True)
def _tools() -> None:
    for tool in ("tshark", "openssl"):
        if shutil.which(tool) is None:
            message = f"{tool} is needed (scripts/install-deps.sh)"
            if os.environ.get("CI") == "true":
                pytest.fail(message)
            pytest.skip(message)


def _grease(value: int) -> bool:
    return value & 0x0F0F == 0x0A0A and value >> 8 == value & 0xFF


def tshark_connections(path: Path) -> dict[int, dict]:
    """Client port -> what tshark's dissection shows of the connection's handshake."""
    xml = subprocess.run(["tshark", "-n", "-r", str(path), "-d", "tcp.port==14433,tls",
                          "-T", "pdml"], capture_output=True, check=True).stdout
    conns: dict[int, dict] = defaultdict(lambda: {"client_hellos": [], "server_hellos": [],
                                                 "certificates": [], "alerts": []})
    for packet in ET.fromstring(xml).iter("packet"):
        ports = {f.get("name"): int(f.get("show")) for f in packet.iter("field")
                 if f.get("name") in ("tcp.srcport", "tcp.dstport")}
        client_port = ports["tcp.dstport"] if ports["tcp.srcport"] in SERVER_PORTS else ports["tcp.srcport"]
        conn = conns[client_port]
        for field in packet.iter("field"):
            name = field.get("name")
            if name == "tls.alert_message.desc":
                # showname: "Description: Unknown CA (48)" -> unknown_ca, the RFC's spelling
                text = re.sub(r" \(\d+\)$", "", field.get("showname").split(": ", 1)[1])
                conn["alerts"].append(text.lower().replace(" ", "_"))
            if name != "tls.handshake":
                continue
            values: dict[str, list] = defaultdict(list)
            for child in field.iter("field"):
                values[child.get("name")].append(child)
            kind = values["tls.handshake.type"][0].get("show") if values["tls.handshake.type"] else None
            if kind == "1":
                conn["client_hellos"].append(values)
            elif kind == "2":
                conn["server_hellos"].append(values)
            elif kind == "11":
                conn["certificates"].append([bytes.fromhex(c.get("value"))
                                             for c in values["tls.handshake.certificate"]])
    return conns


def _codes(values: dict, name: str) -> list[int]:
    return [int(f.get("show"), 0) for f in values[name]]


def _show(values: dict, name: str) -> list[str]:
    return [f.get("show") for f in values[name]]


def _shown_names(values: dict, name: str) -> list[str]:
    """Names from shownames like "Supported Group: x25519 (0x001d)", GREASE left out."""
    return [re.match(r"[^:]+: (.+) \((0x[0-9a-f]+|\d+)\)$", f.get("showname")).group(1)
            for f in values[name] if not _grease(int(f.get("show"), 0))]


def _cipher_names(values: dict) -> list[str]:
    # showname: "Cipher Suite: TLS_AES_256_GCM_SHA384 (0x1302)"
    return [re.match(r"Cipher Suite: (\S+) \(0x", f.get("showname")).group(1)
            for f in values["tls.handshake.ciphersuite"] if not _grease(int(f.get("show"), 0))]


# -- JA4 and JA4S, written again from FoxIO's technical_details/JA4.md and JA4S.md --

_V = {0x0304: "13", 0x0303: "12", 0x0302: "11", 0x0301: "10", 0x0300: "s3"}


def _h12(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _alpn_chars(alpn: str | None) -> str:
    return "00" if not alpn else alpn[0] + alpn[-1]


def ja4_from_tshark(ch: dict) -> str:
    ciphers = [c for c in _codes(ch, "tls.handshake.ciphersuite") if not _grease(c)]
    exts = [e for e in _codes(ch, "tls.handshake.extension.type") if not _grease(e)]
    versions = [v for v in _codes(ch, "tls.handshake.extensions.supported_version") if not _grease(v)]
    version = max(versions) if versions else int(_show(ch, "tls.handshake.version")[0], 0)
    alpns = _show(ch, "tls.handshake.extensions_alpn_str")
    sigs = ",".join(f"{s:04x}" for s in _codes(ch, "tls.handshake.sig_hash_alg"))
    a = f"t{_V[version]}{'d' if 0 in exts else 'i'}{len(ciphers):02d}{len(exts):02d}" \
        f"{_alpn_chars(alpns[0] if alpns else None)}"
    ext_text = ",".join(sorted(f"{e:04x}" for e in exts if e not in (0, 16)))
    return f"{a}_{_h12(','.join(sorted(f'{c:04x}' for c in ciphers)))}_" \
           f"{_h12(ext_text + '_' + sigs if sigs else ext_text)}"


def ja4s_from_tshark(sh: dict) -> str:
    exts = [e for e in _codes(sh, "tls.handshake.extension.type") if not _grease(e)]
    selected = _codes(sh, "tls.handshake.extensions.supported_version")
    version = selected[0] if selected else int(_show(sh, "tls.handshake.version")[0], 0)
    alpns = _show(sh, "tls.handshake.extensions_alpn_str")
    cipher = _codes(sh, "tls.handshake.ciphersuite")[0]
    return f"t{_V[version]}{len(exts):02d}{_alpn_chars(alpns[0] if alpns else None)}_{cipher:04x}_" \
           f"{_h12(','.join(f'{e:04x}' for e in exts))}"


# -- certificates, read by the openssl command ---------------------------------------


def openssl_x509(der: bytes) -> dict:
    out = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-nameopt", "RFC2253",
                          "-subject", "-issuer", "-serial", "-startdate", "-enddate", "-text",
                          "-fingerprint", "-sha1"], input=der, capture_output=True, check=True).stdout
    text = out.decode()

    def line(prefix: str) -> str:
        return re.search(rf"^{prefix}=(.*)$", text, re.M | re.I).group(1).strip()

    def date(value: str) -> str:
        parsed = datetime.strptime(value, "%b %d %H:%M:%S %Y %Z").replace(tzinfo=timezone.utc)
        return parsed.strftime("%Y-%m-%dT%H:%M:%S.000Z")

    san = re.search(r"X509v3 Subject Alternative Name:.*?\n\s*(.*)\n", text)
    names = [part.split(":", 1)[1] for part in san.group(1).split(", ")] if san else []
    return {"subject": line("subject"), "issuer": line("issuer"),
            "serial": str(int(line("serial"), 16)),
            "not_before": date(line("notBefore")), "not_after": date(line("notAfter")),
            "key_bits": int(re.search(r"Public-Key: \((\d+) bit\)", text).group(1)),
            "sha1": line("SHA1 Fingerprint").replace(":", ""),
            "san": names}


def _check_certificate(side: dict, der: bytes) -> None:
    want = openssl_x509(der)
    x509 = side["x509"]
    assert side["subject"] == x509["subject"]["distinguished_name"] == want["subject"]
    assert side["issuer"] == want["issuer"]
    assert x509["serial_number"] == want["serial"]
    assert (side["not_before"], side["not_after"]) == (want["not_before"], want["not_after"])
    assert x509["public_key_size"] == want["key_bits"]
    assert sorted(x509.get("alternative_names", [])) == sorted(want["san"])
    assert side["hash"]["sha1"] == want["sha1"]
    assert side["hash"]["sha256"] == hashlib.sha256(der).hexdigest().upper()


@pytest.mark.parametrize("capture", CAPTURES, ids=[p.name for p in CAPTURES])
def test_sessions_agree_with_tshark(capture: Path) -> None:
    docs = decode_file(capture)
    conns = tshark_connections(capture)
    handshakes = {port: c for port, c in conns.items() if c["client_hellos"]}
    assert sorted(d["source"]["port"] for d in docs) == sorted(handshakes)
    for doc in docs:
        conn = handshakes[doc["source"]["port"]]
        tls = doc["tls"]
        ch = conn["client_hellos"][0]
        assert tls["client"].get("server_name") == next(
            iter(_show(ch, "tls.handshake.extensions_server_name")), None)
        assert tls["client"]["ja3"] == _show(ch, "tls.handshake.ja3")[0]
        assert tls["client"]["ja4"] == ja4_from_tshark(ch)
        assert tls["client"]["supported_ciphers"] == _cipher_names(ch)
        hello = tls["detailed"]["client_hello"]
        assert hello["random"] == _show(ch, "tls.handshake.random")[0].replace(":", "")
        assert hello["session_id"] == "".join(_show(ch, "tls.handshake.session_id")).replace(":", "")
        extensions = hello["extensions"]
        assert extensions.get("supported_groups", []) == _shown_names(ch, "tls.handshake.extensions_supported_group")
        assert extensions.get("supported_versions", []) == _shown_names(ch, "tls.handshake.extensions.supported_version")
        assert extensions.get("ec_points_formats", []) == _shown_names(ch, "tls.handshake.extensions_ec_point_format")
        signatures = _shown_names(ch, "tls.handshake.sig_hash_alg")
        assert len(extensions.get("signature_algorithms", [])) == len(signatures)
        for ours, theirs in zip(extensions.get("signature_algorithms", []), signatures):
            if re.fullmatch(r"[a-z0-9_]+", theirs):   # the RFC 8446 names; tshark spells the
                assert ours == theirs                  # TLS 1.2-only pairs its own way ("SHA224 DSA")
        assert extensions.get("application_layer_protocol_negotiation", []) == _show(
            ch, "tls.handshake.extensions_alpn_str")
        real = [sh for sh in conn["server_hellos"]
                if _show(sh, "tls.handshake.random")[0].replace(":", "") != HRR_RANDOM]
        assert len(real) <= 1
        if real:
            sh = real[0]
            selected = _codes(sh, "tls.handshake.extensions.supported_version")
            version = selected[0] if selected else int(_show(sh, "tls.handshake.version")[0], 0)
            assert tls["version"] == {0x0303: "1.2", 0x0304: "1.3"}[version]
            assert tls["cipher"] == _cipher_names(sh)[0]
            assert tls.get("next_protocol") == next(iter(_show(sh, "tls.handshake.extensions_alpn_str")), None)
            assert tls["server"]["ja3s"] == _show(sh, "tls.handshake.ja3s")[0]
            assert tls["server"]["ja4s"] == ja4s_from_tshark(sh)
            server_hello = tls["detailed"]["server_hello"]
            assert server_hello["random"] == _show(sh, "tls.handshake.random")[0].replace(":", "")
            assert server_hello["session_id"] == "".join(_show(sh, "tls.handshake.session_id")).replace(":", "")
        else:
            assert "version" not in tls and "cipher" not in tls
        assert tls["detailed"].get("alert_types", []) == conn["alerts"]
        # Certificates: the server's first, the client's second (TLS 1.2 only: 1.3 encrypts them)
        certs = conn["certificates"]
        if tls.get("version") == "1.3":
            assert certs == [] and "x509" not in tls.get("server", {})
        if certs:
            _check_certificate(tls["server"], certs[0][0])
        if len(certs) > 1:
            _check_certificate(tls["client"], certs[1][0])
        if not certs:
            assert "x509" not in tls.get("server", {})


HRR_RANDOM = "cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c"


# What the capture script did, connection by connection (its ground truth).
EXPECTED = {
    "tls12_rsa.pcap": [("OK", True, False, None)] * 2,
    "tls13_ecdsa_anyport.pcap": [("OK", True, False, None)] * 2,
    "tls12_resumption.pcap": [("OK", True, False, None), ("OK", True, True, "id"),
                              ("OK", True, False, None), ("OK", True, True, "ticket")],
    "tls13_resumption_hrr.pcap": [("OK", True, False, None), ("OK", True, True, "ticket"),
                                  ("OK", True, False, None)],
    "tls12_client_cert.pcap": [("OK", True, False, None)],
    "tls12_alerts.pcap": [("Error", False, False, None)] * 2,
}


@pytest.mark.parametrize("capture", CAPTURES, ids=[p.name for p in CAPTURES])
def test_established_and_resumed_follow_what_the_script_did(capture: Path) -> None:
    docs = sorted(decode_file(capture), key=lambda d: d["@timestamp"])
    got = [(d["status"], d["tls"]["established"], d["tls"]["resumed"],
            d["tls"]["detailed"].get("resumption_method")) for d in docs]
    assert got == EXPECTED[capture.name]


def test_hello_retry_request_is_seen_and_the_real_server_hello_decoded() -> None:
    docs = sorted(decode_file(PCAPS / "tls" / "tls13_resumption_hrr.pcap"), key=lambda d: d["@timestamp"])
    assert [d["tls"]["detailed"].get("hello_retry_request", False) for d in docs] == [False, False, True]
    assert docs[2]["tls"]["version"] == "1.3" and docs[2]["tls"]["established"]


def test_detection_can_be_turned_off() -> None:
    capture = PCAPS / "tls" / "tls13_ecdsa_anyport.pcap"
    assert len(decode_file(capture)) == 2
    assert decode_file(capture, "wirebeat.protocols.tls.detect=false") == []


def test_a_port_can_be_configured_instead_of_detected() -> None:
    capture = PCAPS / "tls" / "tls13_ecdsa_anyport.pcap"
    docs = decode_file(capture, "wirebeat.protocols.tls.detect=false",
                       "wirebeat.protocols.tls.ports=[14433]")
    assert [d["destination"]["port"] for d in docs] == [14433, 14433]
