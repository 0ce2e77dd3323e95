"""DNS decoder: messages built by hand from RFC 1035/3596/4034/5155/6891/7871/8659/9460,
pairing over UDP, framing over TCP, the named attacks, and fuzzing.

Expected values are written out from the RFCs' wire formats, not computed by
the decoder's own tables.
"""
from __future__ import annotations

import base64
import hashlib
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wirebeat.decoders.api import Datagram, DecodeError, FlowKey, Truncated
from wirebeat.decoders.dns import (DECODER, MAX_PENDING_DEFAULT, NOTE_DUPLICATE, NOTE_EDNS_NO_SUPPORT,
                          NOTE_EDNS_UNEXPECTED, NOTE_NO_RESPONSE, NOTE_ORPHANED,
                          NOTE_UDP_TOO_LARGE_RESPONSE,
                          NOTE_UNDECODABLE_RESPONSE, TCP_MAX_HUNT_BYTES, DNSDecoder, DNSStream,
                          decode_message, document, read_name)

# -- building messages (RFC 1035 §4.1) ------------------------------------------------

QR, AA, TC, RD, RA, AD, CD = 0x8000, 0x0400, 0x0200, 0x0100, 0x0080, 0x0020, 0x0010
A, NS, CNAME, SOA, PTR, MX, TXT, AAAA, SRV, OPT = 1, 2, 5, 6, 12, 15, 16, 28, 33, 41
DS, RRSIG, NSEC, DNSKEY, NSEC3, NSEC3PARAM, SVCB, HTTPS, CAA = 43, 46, 47, 48, 50, 51, 64, 65, 257
IN = 1


def name(text: str) -> bytes:
    """Uncompressed wire form of a dotted name ("" or "." is the root)."""
    labels = [label for label in text.split(".") if label]
    return b"".join(bytes([len(label)]) + label.encode() for label in labels) + b"\0"


def header(ident: int = 0x1234, flags: int = RD, qd: int = 1, an: int = 0, ns: int = 0,
           ar: int = 0) -> bytes:
    return struct.pack("!6H", ident, flags, qd, an, ns, ar)


def question(qname: str = "www.example.com", qtype: int = A, qclass: int = IN) -> bytes:
    return name(qname) + struct.pack("!HH", qtype, qclass)


def rr(owner: bytes, rrtype: int, rdata: bytes, ttl: int = 300, rrclass: int = IN) -> bytes:
    return owner + struct.pack("!HHIH", rrtype, rrclass, ttl, len(rdata)) + rdata


def opt(udp_size: int = 1232, ext_rcode: int = 0, version: int = 0, do: bool = False,
        options: bytes = b"") -> bytes:
    ttl = (ext_rcode << 24) | (version << 16) | (0x8000 if do else 0)
    return rr(b"\0", OPT, options, ttl=ttl, rrclass=udp_size)


def edns_option(code: int, data: bytes) -> bytes:
    return struct.pack("!HH", code, len(data)) + data


QNAME_AT = b"\xc0\x0c"        # pointer to the first question's name, right after the header


def query(ident: int = 0x1234, qname: str = "www.example.com", qtype: int = A,
          edns: bool = False) -> bytes:
    return header(ident, RD, 1, 0, 0, 1 if edns else 0) + question(qname, qtype) + (
        opt() if edns else b"")


def response(ident: int = 0x1234, qname: str = "www.example.com", qtype: int = A,
             answers: tuple[bytes, ...] = (), rcode: int = 0, flags: int = QR | RD | RA,
             authorities: tuple[bytes, ...] = (), additionals: tuple[bytes, ...] = ()) -> bytes:
    return (header(ident, flags | rcode, 1, len(answers), len(authorities), len(additionals))
            + question(qname, qtype) + b"".join(answers) + b"".join(authorities)
            + b"".join(additionals))


def answer_of(rrtype: int, rdata: bytes, qname: str = "example.com") -> dict:
    """Decode a one-answer response and return the document's answer object."""
    payload = response(qname=qname, qtype=rrtype, answers=(rr(QNAME_AT, rrtype, rdata),))
    assert decode_message(payload).notes == ()
    [answer] = doc_for(payload)["dns"]["answers"]
    return answer


FLOW = FlowKey("udp", "192.0.2.1", 40000, "192.0.2.53", 53, "test")
OPTIONS = {"transaction_timeout": 10.0, "send_request": False, "send_response": False,
           "include_authorities": False, "include_additionals": False,
           "max_pending": MAX_PENDING_DEFAULT}


def doc_for(payload: bytes, **options) -> dict:
    """The document of a lone message (a response without query, or an expired query)."""
    decoder = DNSDecoder({**OPTIONS, **options})
    txns = decoder.on_datagram(Datagram(1.0, FLOW, False, payload)) + decoder.expire(1e9)
    return document(txns[0])


# -- header and question --------------------------------------------------------------

def test_header_flags_are_read_from_their_rfc_bit_positions():
    # RFC 1035 §4.1.1: QR(15) OPCODE(14-11) AA(10) TC(9) RD(8) RA(7) Z(6) AD(5) CD(4) RCODE(3-0)
    flags = QR | (2 << 11) | AA | TC | RD | RA | AD | CD | 5
    msg = decode_message(header(0xBEEF, flags, 0))
    assert (msg.id, msg.is_response, msg.opcode, msg.rcode) == (0xBEEF, True, 2, 5)
    assert msg.authoritative and msg.truncated and msg.recursion_desired
    assert msg.recursion_available and msg.authentic_data and msg.checking_disabled


def test_question_name_has_no_trailing_dot_and_root_is_a_dot():
    msg = decode_message(header(qd=2) + question("www.example.com", AAAA) + question(".", NS))
    assert [(q.name, q.type, q.class_) for q in msg.questions] == [
        ("www.example.com", AAAA, IN), (".", NS, IN)]


def test_labels_with_dots_and_unprintable_bytes_are_escaped():
    wire = bytes([3]) + b"a.b" + bytes([2]) + b"\x00\xff" + b"\0"
    assert read_name(wire, 0) == ("a\\.b.\\000\\255", len(wire))


def test_header_shorter_than_12_bytes_is_truncated():
    with pytest.raises(Truncated) as err:
        decode_message(b"\x12\x34\x01\x00")
    assert err.value.reason == "dns.truncated"


def test_question_running_past_the_end_rejects_the_message():
    with pytest.raises(Truncated):
        decode_message(header() + name("www.example.com") + b"\x00")   # half a QTYPE


# -- compression and the named attacks ----------------------------------------------------

def test_compressed_answer_name_and_target_follow_backward_pointers():
    # "cdn" + pointer to "example.com" inside the question (offset 12 + 4 = 16).
    answers = (rr(QNAME_AT, CNAME, b"\x03cdn\xc0\x10"),)
    msg = decode_message(response(answers=answers))
    [cname] = msg.answers
    assert (cname.name, cname.data) == ("www.example.com", "cdn.example.com")


def test_pointer_to_itself_is_a_forward_pointer():
    wire = header(qd=1) + b"\xc0\x0c" + struct.pack("!HH", A, IN)
    with pytest.raises(DecodeError) as err:
        decode_message(wire)
    assert err.value.reason == "dns.forward_pointer"


def test_forward_pointer_is_rejected():
    # The question's name points at offset 20, past the pointer itself.
    wire = header(qd=1) + b"\xc0\x14" + struct.pack("!HH", A, IN) + name("example.com")
    with pytest.raises(DecodeError) as err:
        decode_message(wire)
    assert err.value.reason == "dns.forward_pointer"


def test_pointer_loop_is_rejected():
    # At 12: label "a", then a pointer back to 12: a name that never ends.
    wire = header(qd=1) + b"\x01a\xc0\x0c" + struct.pack("!HH", A, IN)
    with pytest.raises(DecodeError) as err:
        decode_message(wire)
    assert err.value.reason == "dns.pointer_loop"


def test_two_names_pointing_at_each_other_are_stopped_at_the_forward_hop():
    # 12: "a" -> ptr 16; 16: "b" -> ptr 12. Read from 16, the hop back to 12 is
    # allowed, the one from 14 to 16 is forward: the loop is never entered.
    names = b"\x01a\xc0\x10" + b"\x01b\xc0\x0c"
    with pytest.raises(DecodeError) as err:
        read_name(header() + names, 16)
    assert err.value.reason == "dns.forward_pointer"


def test_long_chain_of_backward_pointers_is_capped():
    # Offsets 12, 14, 16, ...: each a pointer to the one before; the first is the root.
    chain = b"\x00\x00" + b"".join(struct.pack("!H", 0xC000 | (12 + 2 * i)) for i in range(200))
    data = header() + chain
    assert read_name(data, 12 + 2 * 100)[0] == "."
    with pytest.raises(DecodeError) as err:
        read_name(data, 12 + 2 * 200)
    assert err.value.reason == "dns.pointer_chain_too_long"


def test_name_longer_than_255_octets_is_rejected():
    long_name = ".".join(["a" * 63] * 4)            # 4 * 64 + 1 = 257 octets
    with pytest.raises(DecodeError) as err:
        decode_message(header() + question(long_name))
    assert err.value.reason == "dns.name_too_long"


def test_255_octet_name_is_accepted():
    ok_name = ".".join(["a" * 63] * 3 + ["a" * 61])  # 3 * 64 + 62 + 1 = 255
    assert decode_message(header() + question(ok_name)).questions[0].name == ok_name


def test_label_type_bits_01_and_10_are_rejected():
    for first in (0x40, 0x80):
        with pytest.raises(DecodeError) as err:
            decode_message(header() + bytes([first | 1]) + b"a\0" + struct.pack("!HH", A, IN))
        assert err.value.reason == "dns.bad_label_type"


def test_label_length_past_the_end_is_truncated():
    with pytest.raises(Truncated):
        decode_message(header() + b"\x3fabc")


def test_rdlength_past_the_end_keeps_earlier_records_with_a_note():
    good = rr(QNAME_AT, A, bytes([192, 0, 2, 1]))
    bad = QNAME_AT + struct.pack("!HHIH", A, IN, 300, 400) + bytes([192, 0, 2, 2])
    msg = decode_message(response(answers=(good, bad)))
    assert [a.data for a in msg.answers] == ["192.0.2.1"]
    assert msg.notes == ("dns.answer_section_incomplete",)


def test_counts_larger_than_the_message_end_in_a_note_not_an_exception():
    msg = decode_message(header(0x1, QR, 1, 65535, 65535, 65535) + question())
    assert msg.answers == () and msg.notes == ("dns.answer_section_incomplete",)


def test_rdata_that_does_not_fit_its_type_is_kept_as_hex_with_a_note():
    msg = decode_message(response(answers=(rr(QNAME_AT, A, b"\x01\x02\x03"),)))
    [answer] = msg.answers
    assert answer.data == "010203"
    assert msg.notes == ("dns.answer_rdata_malformed",)


def test_a_name_in_rdata_cannot_run_past_its_rdlength():
    # MX whose exchange name claims 10 bytes but RDLENGTH leaves it 4: the next
    # record must still be found at the right place.
    bad_mx = QNAME_AT + struct.pack("!HHIH", MX, IN, 60, 6) + b"\x00\x0a\x0aabc"
    good = rr(QNAME_AT, A, bytes([192, 0, 2, 7]))
    msg = decode_message(response(qtype=MX, answers=(bad_mx, good)))
    assert [a.data for a in msg.answers] == ["000a0a616263", "192.0.2.7"]
    assert msg.notes == ("dns.answer_rdata_malformed",)


# -- RDATA by type --------------------------------------------------------------------------

def test_a_and_aaaa():
    assert answer_of(A, bytes([93, 184, 216, 34]))["data"] == "93.184.216.34"
    aaaa = bytes.fromhex("20010db8000000000000000000000010")
    assert answer_of(AAAA, aaaa)["data"] == "2001:db8::10"


def test_ns_ptr_cname_targets_lose_their_trailing_dot():
    assert answer_of(NS, name("ns1.example.net"))["data"] == "ns1.example.net"
    assert answer_of(PTR, name("host.example.org"))["data"] == "host.example.org"
    assert answer_of(CNAME, b"\x03www" + QNAME_AT)["data"] == "www.example.com"


def test_mx_has_preference():
    answer = answer_of(MX, struct.pack("!H", 10) + name("mail.example.com"))
    assert (answer["preference"], answer["data"]) == (10, "mail.example.com")


def test_soa_fields():
    rdata = (name("ns1.example.com") + name("hostmaster.example.com")
             + struct.pack("!5I", 2024010101, 7200, 3600, 1209600, 300))
    answer = answer_of(SOA, rdata)
    assert answer["data"] == "ns1.example.com" and answer["rname"] == "hostmaster.example.com"
    assert [answer[k] for k in ("serial", "refresh", "retry", "expire", "minimum")] == [
        2024010101, 7200, 3600, 1209600, 300]


def test_srv_fields():
    answer = answer_of(SRV, struct.pack("!3H", 10, 20, 5060) + name("sip.example.com"))
    assert (answer["priority"], answer["weight"], answer["port"], answer["data"]) == (
        10, 20, 5060, "sip.example.com")


def test_txt_strings_are_joined_by_a_space_and_quotes_escaped():
    rdata = b"\x0ev=spf1 mx -all" + b"\x05a\"b\\c" + b"\x00"
    assert answer_of(TXT, rdata)["data"] == 'v=spf1 mx -all a\\"b\\\\c '


def test_caa():
    rdata = b"\x80\x05issue" + b"ca.example.net"
    assert answer_of(CAA, rdata)["data"] == '128 issue "ca.example.net"'


def test_ds():
    digest = hashlib.sha256(b"x").digest()
    answer = answer_of(DS, struct.pack("!HBB", 60485, 8, 2) + digest)
    assert (answer["key_tag"], answer["algorithm"], answer["digest_type"]) == (
        "60485", "RSASHA256", "SHA256")
    assert answer["data"] == digest.hex().upper()


def test_dnskey():
    key = bytes(range(32))
    answer = answer_of(DNSKEY, struct.pack("!HBB", 257, 3, 15) + key)
    assert (answer["flags"], answer["protocol"], answer["algorithm"]) == ("257", "3", "ED25519")
    assert answer["data"] == base64.b64encode(key).decode()


def test_rrsig():
    # Expiration 2030-01-01T00:00:00Z = 1893456000, inception 2025-01-01 = 1735689600.
    signature = bytes(64)
    rdata = (struct.pack("!HBBIIIH", A, 13, 2, 3600, 1893456000, 1735689600, 12345)
             + name("example.com") + signature)
    answer = answer_of(RRSIG, rdata)
    assert answer["type_covered"] == "A" and answer["algorithm"] == "ECDSAP256SHA256"
    assert (answer["labels"], answer["original_ttl"], answer["key_tag"]) == ("2", "3600", "12345")
    assert (answer["expiration"], answer["inception"]) == ("20300101000000", "20250101000000")
    assert answer["signer_name"] == "example.com"
    assert answer["data"] == base64.b64encode(signature).decode()


def test_nsec_type_bitmap():
    # RFC 4034 §4.3 example: A MX RRSIG NSEC TYPE1234.
    bitmap = bytes([0, 6, 0x40, 0x01, 0, 0, 0, 0x03]) + bytes([4, 27]) + bytes(26) + b"\x20"
    answer = answer_of(NSEC, name("host.example.com") + bitmap)
    assert answer["data"] == "host.example.com"
    assert answer["type_bits"] == "A MX RRSIG NSEC 1234"


def test_nsec3_and_nsec3param():
    next_hash = bytes(range(20))
    rdata = (struct.pack("!BBH", 1, 1, 12) + b"\x04\xaa\xbb\xcc\xdd" + bytes([20]) + next_hash
             + bytes([0, 1, 0x40]))
    answer = answer_of(NSEC3, rdata)
    assert (answer["hash"], answer["flags"], answer["iterations"], answer["salt"]) == (
        "SHA1", "1", "12", "AABBCCDD")
    assert answer["data"] == base64.b32hexencode(next_hash).decode()
    assert answer["type_bits"] == "A"
    param = answer_of(NSEC3PARAM, struct.pack("!BBH", 1, 0, 0) + b"\x00")
    assert (param["hash"], param["iterations"], param["data"]) == ("SHA1", "0", "-")


def test_https_and_svcb_presentation():
    params = (struct.pack("!HH", 1, 6) + b"\x02h2\x02h3" + struct.pack("!HH", 3, 2)
              + struct.pack("!H", 8443) + struct.pack("!HH", 4, 4) + bytes([192, 0, 2, 1]))
    answer = answer_of(HTTPS, struct.pack("!H", 1) + b"\0" + params)
    assert answer["data"] == "1 . alpn=h2,h3 port=8443 ipv4hint=192.0.2.1"
    assert answer["priority"] == 1
    alias = answer_of(SVCB, struct.pack("!H", 0) + name("svc.example.net"))
    assert alias["data"] == "0 svc.example.net"


def test_unknown_type_is_kept_as_hex_and_named_by_number():
    answer = answer_of(65280, b"wirebeat")
    assert (answer["type"], answer["data"]) == ("65280", "7769726562656174")


def test_ttl_is_a_string_as_packetbeat_emits_it():
    assert answer_of(A, bytes(4))["ttl"] == "300"


# -- EDNS -----------------------------------------------------------------------------

def test_edns_fields_and_extended_rcode():
    # RFC 6891 §6.1.3: the full rcode is EXTENDED-RCODE << 4 | header RCODE; 1 << 4 = BADVERS.
    payload = response(additionals=(opt(4096, ext_rcode=1, version=0, do=True),))
    msg = decode_message(payload)
    assert msg.edns.udp_size == 4096 and msg.edns.do and msg.rcode == 16
    dns = doc_for(payload)["dns"]
    assert dns["opt"] == {"version": "0", "do": True, "ext_rcode": "BADVERS", "udp_size": 4096}
    assert dns["response_code"] == "BADVERS"
    assert "DO" in dns["header_flags"]
    assert dns["additionals_count"] == 0        # the OPT pseudo-record is not counted


def test_edns_nsid_cookie_and_client_subnet():
    options = (edns_option(3, b"ns-1") + edns_option(10, bytes.fromhex("0102030405060708"))
               + edns_option(8, struct.pack("!HBB", 1, 24, 0) + bytes([192, 0, 2])))
    msg = decode_message(response(additionals=(opt(options=options),)))
    assert dict(msg.edns.options) == {"nsid": "6e732d31", "cookie": "0102030405060708",
                                      "subnet": "192.0.2.0/24/0"}


def test_ipv6_client_subnet():
    option = edns_option(8, struct.pack("!HBB", 2, 48, 0) + bytes.fromhex("20010db80001"))
    msg = decode_message(response(additionals=(opt(options=option),)))
    assert msg.edns.options["subnet"] == "2001:db8:1::/48/0"


def test_bad_edns_option_is_a_note_and_the_rest_survives():
    bad_subnet = edns_option(8, struct.pack("!HBB", 1, 24, 0) + bytes(8))
    msg = decode_message(response(additionals=(opt(options=bad_subnet + edns_option(3, b"x")),)))
    assert msg.edns.options == {"nsid": "78"}
    assert msg.notes == ("dns.edns_option_malformed",)


# -- documents ---------------------------------------------------------------------------

def test_question_public_suffix_fields():
    dns = doc_for((response(qname="www.example.co.uk")))["dns"]
    assert dns["question"] == {"name": "www.example.co.uk", "type": "A", "class": "IN",
                               "etld_plus_one": "example.co.uk",
                               "registered_domain": "example.co.uk",
                               "top_level_domain": "co.uk", "subdomain": "www"}


def test_question_that_is_a_public_suffix_gets_packetbeats_one_dot_rule():
    question_ = doc_for((response(qname="co.uk")))["dns"]["question"]
    assert question_["registered_domain"] == "co.uk" and question_["top_level_domain"] == "uk"
    assert "etld_plus_one" not in question_


def test_resolved_ips_go_to_related_ip():
    answers = (rr(QNAME_AT, A, bytes([192, 0, 2, 10])), rr(QNAME_AT, A, bytes([192, 0, 2, 11])))
    doc = doc_for((response(answers=answers)))
    assert doc["dns"]["resolved_ip"] == ["192.0.2.10", "192.0.2.11"]
    assert doc["related"]["ip"] == ["192.0.2.1", "192.0.2.53", "192.0.2.10", "192.0.2.11"]


def test_authorities_and_additionals_only_when_configured():
    soa = rr(name("example.com"), SOA, name("ns") + name("h") + bytes(20))
    glue = rr(name("ns.example.com"), A, bytes([192, 0, 2, 53]))
    msg = response(authorities=(soa,), additionals=(glue, opt()))
    plain = doc_for(msg)["dns"]
    assert (plain["authorities_count"], plain["additionals_count"]) == (1, 1)
    assert "authorities" not in plain and "additionals" not in plain
    full = doc_for(msg, include_authorities=True, include_additionals=True)["dns"]
    assert [r["type"] for r in full["authorities"]] == ["SOA"]
    assert [r["data"] for r in full["additionals"]] == ["192.0.2.53"]


def test_flags_are_all_written_and_header_flags_list_the_set_ones():
    dns = doc_for((response(flags=QR | AA | RD)))["dns"]
    assert dns["flags"] == {"authoritative": True, "truncated_response": False,
                            "recursion_desired": True, "recursion_available": False,
                            "authentic_data": False, "checking_disabled": False}
    assert dns["header_flags"] == ["AA", "RD"]


# -- pairing over UDP ---------------------------------------------------------------------

def udp(decoder: DNSDecoder, ts: float, payload: bytes, from_client: bool = True,
        flow: FlowKey = FLOW):
    return decoder.on_datagram(Datagram(ts, flow, from_client, payload))


def test_query_and_response_make_one_ok_transaction():
    decoder = DNSDecoder(OPTIONS)
    assert udp(decoder, 10.0, query()) == []
    [txn] = udp(decoder, 10.25, response(answers=(rr(QNAME_AT, A, bytes(4)),)), False)
    assert (txn.status, txn.ts, txn.end_ts, txn.flow) == ("OK", 10.0, 10.25, FLOW)
    assert (txn.request_bytes, txn.response_bytes) == (len(query()), len(response(
        answers=(rr(QNAME_AT, A, bytes(4)),))))
    doc = document(txn)
    assert doc["method"] == "QUERY" and doc["query"] == "class IN, type A, www.example.com"
    assert doc["resource"] == "www.example.com" and doc["dns"]["type"] == "answer"


def test_nxdomain_is_an_error():
    decoder = DNSDecoder(OPTIONS)
    udp(decoder, 1.0, query())
    [txn] = udp(decoder, 1.1, response(rcode=3), False)
    assert txn.status == "Error" and document(txn)["dns"]["response_code"] == "NXDOMAIN"


def test_response_without_query_is_reported_alone_with_a_note():
    decoder = DNSDecoder(OPTIONS)
    [txn] = udp(decoder, 5.0, response(), False)
    assert txn.status == "Error" and txn.notes == (NOTE_ORPHANED,)
    assert txn.detail.request is None and txn.request_bytes is None
    assert txn.flow == FLOW              # still client first
    assert decoder.counters["unmatched_responses"] == 1


def test_unanswered_query_expires_after_the_timeout_with_a_note():
    decoder = DNSDecoder({**OPTIONS, "transaction_timeout": 2.0})
    udp(decoder, 100.0, query())
    assert decoder.expire(101.9) == []
    [txn] = decoder.expire(102.0)
    assert txn.status == "Error" and txn.notes == (NOTE_NO_RESPONSE,)
    assert txn.end_ts is None and document(txn)["dns"]["type"] == "query"


def test_a_query_answered_over_another_flow_does_not_pair():
    decoder = DNSDecoder(OPTIONS)
    udp(decoder, 1.0, query())
    other = FlowKey("udp", "192.0.2.1", 40001, "192.0.2.53", 53, "test")
    [txn] = udp(decoder, 1.1, response(), False, other)
    assert txn.notes == (NOTE_ORPHANED,)


def test_duplicate_id_closes_the_earlier_query():
    decoder = DNSDecoder(OPTIONS)
    udp(decoder, 1.0, query())
    [txn] = udp(decoder, 1.5, query())
    assert txn.ts == 1.0 and txn.notes == (NOTE_DUPLICATE,) and txn.status == "Error"


def test_id_flood_is_capped_and_counted():
    decoder = DNSDecoder({**OPTIONS, "max_pending": 10})
    evicted = []
    for ident in range(25):
        evicted += udp(decoder, 1.0 + ident / 100, query(ident))
    assert len(decoder.pairing.pending) == 10
    assert decoder.counters["pending_evicted"] == 15
    assert [t.detail.request.id for t in evicted] == list(range(15))
    assert all(t.notes == (NOTE_NO_RESPONSE,) for t in evicted)
    # The newest ten still pair.
    [txn] = udp(decoder, 2.0, response(24), False)
    assert txn.status == "OK"


def test_edns_mismatch_and_oversized_plain_response_notes():
    decoder = DNSDecoder(OPTIONS)
    udp(decoder, 1.0, query(edns=True))
    big = response(answers=tuple(rr(QNAME_AT, TXT, b"\xff" + bytes(255)) for _ in range(3)))
    [txn] = udp(decoder, 1.1, big, False)
    assert txn.notes == (NOTE_UDP_TOO_LARGE_RESPONSE, NOTE_EDNS_NO_SUPPORT)
    udp(decoder, 2.0, query(7))
    [txn] = udp(decoder, 2.1, response(7, additionals=(opt(),)), False)
    assert txn.notes == (NOTE_EDNS_UNEXPECTED,)


def test_send_request_and_response_render_packetbeats_text():
    decoder = DNSDecoder({**OPTIONS, "send_request": True, "send_response": True})
    udp(decoder, 1.0, query())
    answers = (rr(QNAME_AT, MX, struct.pack("!H", 10) + name("mail.example.com")),)
    [txn] = udp(decoder, 1.1, response(qtype=MX, answers=answers), False)
    doc = document(txn)
    assert doc["request"] == ("ID 4660; QR query; OPCODE QUERY; FLAGS rd; RCODE NOERROR; "
                              "QUESTION class IN, type A, www.example.com")
    assert doc["response"] == ("ID 4660; QR response; OPCODE QUERY; FLAGS rd ra; RCODE NOERROR; "
                               "QUESTION class IN, type MX, www.example.com; "
                               "ANSWER preference 10, mail.example.com")


# -- TCP framing ---------------------------------------------------------------------------

TCP_FLOW = FlowKey("tcp", "192.0.2.1", 40000, "192.0.2.53", 53, "test")


def framed(message: bytes) -> bytes:
    return struct.pack("!H", len(message)) + message


def stream() -> DNSStream:
    return DECODER.stream(TCP_FLOW, OPTIONS)


def whole(data: bytes) -> list[bytes]:
    return [data]


def byte_by_byte(data: bytes) -> list[bytes]:
    return [data[i:i + 1] for i in range(len(data))]


def in_threes(data: bytes) -> list[bytes]:
    return [data[i:i + 3] for i in range(0, len(data), 3)]


QUERIES = framed(query(1)) + framed(query(2, qtype=MX)) + framed(query(3, qtype=TXT))
ANSWERS = (framed(response(1, answers=(rr(QNAME_AT, A, bytes([192, 0, 2, 1])),)))
           + framed(response(2, qtype=MX)) + framed(response(3, qtype=TXT, rcode=3)))


@pytest.mark.parametrize("chunks", [whole, byte_by_byte, in_threes])
def test_several_messages_per_connection_decode_the_same_however_tcp_splits_them(chunks):
    s = stream()
    txns = []
    for i, piece in enumerate(chunks(QUERIES)):
        txns += s.on_data(True, piece, 1.0 + i / 1e4)
    for i, piece in enumerate(chunks(ANSWERS)):
        txns += s.on_data(False, piece, 2.0 + i / 1e4)
    assert [(t.detail.request.id, t.status) for t in txns] == [(1, "OK"), (2, "OK"), (3, "Error")]
    assert txns[0].request_bytes == len(framed(query(1)))     # with the length prefix
    assert all(t.flow == TCP_FLOW for t in txns)
    assert s.on_close(3.0) == []


def test_message_time_is_the_time_of_its_first_segment():
    s = stream()
    data = framed(query(7))
    s.on_data(True, data[:5], 1.0)
    s.on_data(True, data[5:], 1.5)
    [txn] = s.on_data(False, framed(response(7)), 2.0)
    assert (txn.ts, txn.end_ts) == (1.0, 2.0)


def test_gap_inside_a_message_of_known_length_skips_exactly_to_the_next():
    s = stream()
    s.on_data(True, QUERIES, 1.0)
    first = framed(response(1))
    s.on_data(False, first[:10], 2.0)
    s.on_gap(False, len(first) - 10 - 4, 2.1)    # the first answer's last 4 bytes survive
    txns = s.on_data(False, first[-4:] + framed(response(2, qtype=MX)), 2.2)
    assert [t.detail.request.id for t in txns] == [2]
    assert s.counters["gap_messages_lost"] == 1
    unanswered = s.on_close(3.0)
    assert [t.detail.request.id for t in unanswered] == [1, 3]
    assert all(t.notes == (NOTE_NO_RESPONSE,) for t in unanswered)


def test_gap_of_unknown_extent_resynchronises_on_the_next_plausible_message():
    s = stream()
    s.on_data(True, QUERIES, 1.0)
    s.on_gap(False, 57, 2.0)                      # lost bytes at a message boundary
    noise = b"\x01\x02\x03"                       # the tail of something lost
    txns = s.on_data(False, noise + framed(response(3, qtype=TXT)), 2.1)
    assert [t.detail.request.id for t in txns] == [3]
    assert s.counters["resynchronised"] == 1


def test_resynchronisation_waits_for_a_message_split_after_the_gap():
    s = stream()
    s.on_data(True, QUERIES, 1.0)
    s.on_gap(False, 100, 2.0)
    answer = framed(response(2, qtype=MX))
    assert s.on_data(False, b"\x07\x07" + answer[:9], 2.1) == []
    [txn] = s.on_data(False, answer[9:], 2.2)
    assert txn.detail.request.id == 2


def test_hunting_through_junk_costs_time_in_proportion_and_memory_is_capped():
    import random
    import time as clock
    junk = random.Random(4).randbytes(600_000)
    s = stream()
    s.on_data(True, framed(query(6)), 1.0)
    s.on_gap(False, 1000, 1.1)
    started = clock.perf_counter()
    for i in range(0, len(junk), 100):           # 6000 small segments
        s.on_data(False, junk[i:i + 100], 1.2)
    assert clock.perf_counter() - started < 10
    assert len(s.sides[False].buffer) <= TCP_MAX_HUNT_BYTES
    txns = s.on_data(False, framed(response(6)), 1.3)
    assert [t.detail.request.id for t in txns] == [6] and txns[0].status == "OK"


def test_undecodable_response_reports_the_latest_query_with_a_note():
    s = stream()
    s.on_data(True, framed(query(9)), 1.0)
    junk = header(9, QR, 1) + b"\xc0\x0c\x00\x01\x00\x01"    # question name points at itself
    [txn] = s.on_data(False, framed(junk), 2.0)
    assert txn.detail.request.id == 9
    assert txn.notes == (NOTE_UNDECODABLE_RESPONSE, "dns.forward_pointer")


def test_undecodable_query_raises_decode_error_for_the_engine_to_count():
    s = stream()
    with pytest.raises(DecodeError):
        s.on_data(True, framed(header() + b"\x3f"), 1.0)
    # The stream goes on with the next message.
    assert s.on_data(True, framed(query(4)), 1.1) == []
    assert s.on_data(False, framed(response(4)), 1.2)[0].status == "OK"


def test_length_prefix_below_a_header_is_an_error_then_the_stream_hunts():
    s = stream()
    with pytest.raises(DecodeError) as err:
        s.on_data(True, b"\x00\x00", 1.0)
    assert err.value.reason == "dns.tcp_length_too_short"
    assert s.on_data(True, framed(query(5)), 1.1) == []
    assert s.on_data(False, framed(response(5)), 1.2)[0].status == "OK"


def test_close_reports_open_queries_and_drops_partial_messages():
    s = stream()
    s.on_data(True, framed(query(1)) + framed(query(2))[:5], 1.0)
    [txn] = s.on_close(2.0)
    assert txn.detail.request.id == 1 and txn.status == "Error"


# -- fuzzing -------------------------------------------------------------------------------

VALID = [
    query(), query(edns=True),
    response(answers=(rr(QNAME_AT, A, bytes(4)), rr(QNAME_AT, CNAME, b"\x01x\xc0\x10"))),
    response(qtype=MX, answers=(rr(QNAME_AT, MX, b"\x00\x0a" + QNAME_AT),),
             additionals=(opt(options=edns_option(3, b"n") + edns_option(
                 8, struct.pack("!HBB", 1, 24, 0) + bytes(3))),)),
    response(qtype=RRSIG, answers=(rr(QNAME_AT, RRSIG, struct.pack("!HBBIIIH", 1, 8, 2, 1, 2, 3, 4)
                                      + name("example.com") + bytes(8)),)),
    response(qtype=HTTPS, answers=(rr(QNAME_AT, HTTPS, b"\x00\x01\x00" + struct.pack("!HH", 1, 3)
                                      + b"\x02h2"),)),
    response(qtype=NSEC3,
             answers=(rr(QNAME_AT, NSEC3, b"\x01\x00\x00\x01\x00\x02ab\x00\x01\x40"),)),
]


def _exercise(payload: bytes) -> None:
    try:
        msg = decode_message(payload)
    except DecodeError:
        return
    decoder = DNSDecoder({**OPTIONS, "send_request": True, "send_response": True,
                          "include_authorities": True, "include_additionals": True})
    for txn in decoder.on_datagram(Datagram(1.0, FLOW, not msg.is_response, payload)):
        document(txn)
    for txn in decoder.expire(float("inf")):
        document(txn)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_random_bytes_parse_or_raise_decode_error(payload: bytes) -> None:
    _exercise(payload)


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(VALID), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)),
                                        max_size=8), st.integers(0, 700))
def test_mutated_messages_parse_or_raise_decode_error(base: bytes, flips, cut: int) -> None:
    data = bytearray(base)
    for position, value in flips:
        data[position % len(data)] = value
    _exercise(bytes(data[:cut]) if cut < len(data) else bytes(data))


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400), st.lists(st.integers(1, 64), min_size=1, max_size=20),
       st.booleans())
def test_tcp_stream_on_random_bytes_only_raises_decode_error(data: bytes, sizes, with_gap) -> None:
    s = stream()
    pos = 0
    for i, size in enumerate(sizes):
        try:
            if with_gap and i == 2:
                s.on_gap(i % 2 == 0, size, 1.0 + i)
            else:
                s.on_data(i % 2 == 0, data[pos:pos + size], 1.0 + i)
        except DecodeError:
            pass
        pos += size
    s.on_close(100.0)


labels = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20)
names = st.lists(labels, min_size=1, max_size=5).map(".".join)


@settings(max_examples=200)
@given(st.integers(0, 0xFFFF), names, st.lists(st.tuples(st.integers(0, 2**31 - 1),
                                                          st.binary(min_size=4, max_size=4)),
                                                max_size=5))
def test_built_messages_decode_back_to_what_was_built(ident, qname, records) -> None:
    answers = tuple(rr(QNAME_AT, A, address, ttl=ttl) for ttl, address in records)
    msg = decode_message(response(ident, qname, answers=answers))
    assert msg.id == ident and msg.questions[0].name == qname
    assert [(a.name, a.ttl, a.data) for a in msg.answers] == [
        (qname, ttl, ".".join(str(b) for b in address)) for ttl, address in records]
    assert msg.notes == ()
