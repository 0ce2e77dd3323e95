"""DNS and DHCPv4 documents of our real-program captures agree with tshark.

pcaps/dns/*.pcap were recorded from dig and Python's resolver against dnsmasq,
pcaps/dhcpv4/*.pcap from dhclient against dnsmasq (see the make_captures.sh
scripts and READMEs there). Each capture goes through the real command line
(`wirebeat run -I FILE --console --strict`), and tshark's dissection of the
same file is the independent oracle: per DNS message the id, question name and
type, rcode, answer count and names, resolved addresses and response time; per
DHCP message the transaction id, op, message type, client MAC and addresses.
DNS over TCP (truncated_then_tcp.pcap, tcp_keepopen.pcap) runs end to end
through the engine's TCP reassembly.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import PCAPS, decode_file

DNS_CAPTURES = sorted((PCAPS / "dns").glob("*.pcap"))
DHCP_CAPTURES = sorted((PCAPS / "dhcpv4").glob("*.pcap"))

# RFC 1035 §3.2.2, RFC 3596, RFC 4034, RFC 8659, RFC 9460: the types in our captures.
TYPE_NAMES = {"1": "A", "5": "CNAME", "12": "PTR", "15": "MX", "16": "TXT", "28": "AAAA",
              "33": "SRV", "43": "DS", "46": "RRSIG", "47": "NSEC", "48": "DNSKEY",
              "65": "HTTPS", "257": "CAA", "65280": "65280"}
RCODE_NAMES = {"0": "NOERROR", "2": "SERVFAIL", "3": "NXDOMAIN", "5": "REFUSED"}
DHCP_MESSAGE_TYPES = {"1": "discover", "2": "offer", "3": "request", "4": "decline", "5": "ack",
                      "6": "nak", "7": "release", "8": "inform"}

DNS_FIELDS = ["udp.srcport", "tcp.srcport", "udp.dstport", "tcp.dstport", "dns.id",
              "dns.flags.response", "dns.qry.name", "dns.qry.type", "dns.flags.rcode",
              "dns.count.answers", "dns.resp.name", "dns.a", "dns.aaaa", "dns.time",
              "dns.count.auth_rr", "dns.count.add_rr", "dns.response_in", "dns.flags.truncated",
              "dns.srv.service", "dns.srv.proto", "dns.srv.name"]
DHCP_FIELDS = ["ip.src", "ip.dst", "udp.srcport", "dhcp.type", "dhcp.id", "dhcp.hw.mac_addr",
               "dhcp.option.dhcp", "dhcp.ip.your", "dhcp.ip.client",
               "dhcp.option.requested_ip_address", "dhcp.option.dhcp_server_id"]


def tshark(capture: Path, fields: list[str], display_filter: str) -> list[dict[str, str]]:
    out = subprocess.run(
        ["tshark", "-n", "-r", str(capture), "-Y", display_filter, "-T", "fields",
         "-E", "separator=|", "-E", "occurrence=a", "-E", "aggregator=,",
         *[arg for f in fields for arg in ("-e", f)]],
        capture_output=True, check=True, text=True).stdout
    return [dict(zip(fields, line.split("|"))) for line in out.splitlines()]


def _ids(path: Path) -> str:
    return str(path.relative_to(PCAPS))


def test_the_captures_are_there():
    assert [p.name for p in DNS_CAPTURES] == [
        "record_types.pcap", "tcp_keepopen.pcap", "truncated_then_tcp.pcap",
        "udp_queries.pcap", "unanswered.pcap"]
    assert [p.name for p in DHCP_CAPTURES] == ["dora_nak_release.pcap"]


# -- DNS --------------------------------------------------------------------------------

def _dns_messages(capture: Path) -> list[dict[str, str]]:
    rows = tshark(capture, DNS_FIELDS, "dns")
    for row in rows:
        assert "," not in row["dns.id"], "one DNS message per frame in our captures"
        row["transport"] = "udp" if row["udp.srcport"] else "tcp"
        row["id"] = int(row["dns.id"], 16)
        src = row["udp.srcport"] or row["tcp.srcport"]
        dst = row["udp.dstport"] or row["tcp.dstport"]
        # The requester's port: the source of a query, the destination of a response.
        row["client_port"] = int(dst if row["dns.flags.response"] == "1" else src)
    return rows


def _by_key(docs: list[dict]) -> dict[tuple, dict]:
    keyed = {}
    for doc in docs:
        key = (doc["network"]["transport"], doc["source"]["port"], doc["dns"]["id"])
        assert key not in keyed, f"two documents for {key}"
        keyed[key] = doc
    return keyed


@pytest.fixture(scope="module", params=DNS_CAPTURES, ids=_ids)
def dns_case(request) -> tuple[list[dict[str, str]], dict[tuple, dict]]:
    docs = [d for d in decode_file(request.param) if d["type"] == "dns"]
    return _dns_messages(request.param), _by_key(docs)


def test_one_document_per_query_response_pair(dns_case):
    rows, docs = dns_case
    keys = {(r["transport"], r["client_port"], r["id"]) for r in rows}
    assert set(docs) == keys


def test_queries_agree_on_id_name_and_type(dns_case):
    rows, docs = dns_case
    for row in rows:
        if row["dns.flags.response"] == "1":
            continue
        doc = docs[(row["transport"], row["client_port"], row["id"])]
        assert doc["resource"] == row["dns.qry.name"]
        qtype = TYPE_NAMES[row["dns.qry.type"]]
        assert doc["query"] == f"class IN, type {qtype}, {row['dns.qry.name']}"
        assert doc["source"]["port"] == row["client_port"]


def test_responses_agree_on_rcode_counts_names_addresses_and_time(dns_case):
    rows, docs = dns_case
    for row in rows:
        if row["dns.flags.response"] != "1":
            continue
        dns = docs[(row["transport"], row["client_port"], row["id"])]["dns"]
        doc = docs[(row["transport"], row["client_port"], row["id"])]
        assert dns["type"] == "answer"
        assert dns["question"]["name"] == row["dns.qry.name"]
        assert dns["question"]["type"] == TYPE_NAMES[row["dns.qry.type"]]
        assert dns["response_code"] == RCODE_NAMES[row["dns.flags.rcode"]]
        assert doc["status"] == ("OK" if row["dns.flags.rcode"] == "0" else "Error")
        assert dns["flags"]["truncated_response"] == (row["dns.flags.truncated"] == "1")
        count = int(row["dns.count.answers"])
        assert dns["answers_count"] == count
        names = row["dns.resp.name"].split(",") if row["dns.resp.name"] else []
        if row["dns.srv.name"]:
            # tshark splits an SRV record's owner into service, proto and name fields.
            names = [f"{row['dns.srv.service']}.{row['dns.srv.proto']}.{row['dns.srv.name']}",
                     *names]
        assert [a["name"] for a in dns.get("answers", [])] == names[:count]
        # Addresses: tshark lists A/AAAA of every section, we only the answers'.
        tshark_ips = [ip for ip in (row["dns.a"] + "," + row["dns.aaaa"]).split(",") if ip]
        assert set(dns.get("resolved_ip", [])) <= set(tshark_ips)
        only_answers = row["dns.count.auth_rr"] == "0" and int(row["dns.count.add_rr"]) <= (
            1 if "opt" in dns else 0)
        if only_answers:
            assert dns.get("resolved_ip", []) == tshark_ips
        # tshark's response time is the query-to-response delta of the same packets.
        assert doc["event"]["duration"] == round(float(row["dns.time"]) * 1e6) * 1000


def test_unanswered_queries_are_errors_with_packetbeats_note(dns_case):
    rows, docs = dns_case
    answered = {(r["transport"], r["client_port"], r["id"]) for r in rows
                if r["dns.flags.response"] == "1"}
    for row in rows:
        key = (row["transport"], row["client_port"], row["id"])
        if row["dns.flags.response"] == "0" and key not in answered:
            assert row["dns.response_in"] == ""
            doc = docs[key]
            assert doc["status"] == "Error" and doc["dns"]["type"] == "query"
            assert doc["error"]["message"] == "No response to this query was received"
            assert "duration" not in doc["event"]


def test_nxdomain_and_tcp_retry_behave_like_packetbeat():
    docs = decode_file(PCAPS / "dns" / "udp_queries.pcap")
    [nx] = [d for d in docs if d["dns"]["response_code"] == "NXDOMAIN"]
    assert nx["status"] == "Error" and nx["dns"]["answers_count"] == 0
    assert "error" not in nx              # packetbeat adds no note for NXDOMAIN
    retry = decode_file(PCAPS / "dns" / "truncated_then_tcp.pcap")
    assert [(d["network"]["transport"], d["dns"]["header_flags"]) for d in retry] == [
        ("udp", ["AA", "TC", "RD", "RA"]), ("tcp", ["AA", "RD", "RA"])]
    tcp_doc = retry[1]
    # packetbeat counts the 2-byte length prefix in the TCP message sizes.
    assert tcp_doc["source"]["bytes"] == 2 + 33 and tcp_doc["dns"]["answers_count"] == 1


# -- DHCPv4 ------------------------------------------------------------------------------

@pytest.mark.parametrize("capture", DHCP_CAPTURES, ids=_ids)
def test_dhcp_messages_agree_with_tshark(capture: Path):
    rows = tshark(capture, DHCP_FIELDS, "dhcp")
    docs = [d for d in decode_file(capture) if d["type"] == "dhcpv4"]
    assert len(docs) == len(rows) > 0
    for row, doc in zip(rows, docs):       # one document per message, in capture order
        dhcp = doc["dhcpv4"]
        assert dhcp["transaction_id"] == row["dhcp.id"]
        assert dhcp["op_code"] == {"1": "bootrequest", "2": "bootreply"}[row["dhcp.type"]]
        assert dhcp["option"]["message_type"] == DHCP_MESSAGE_TYPES[row["dhcp.option.dhcp"]]
        # tshark writes aa:bb:..; ECS (packetbeat 8) writes AA-BB-..
        assert dhcp["client_mac"] == row["dhcp.hw.mac_addr"].split(",")[0].upper().replace(":", "-")
        your_ip = row["dhcp.ip.your"]
        assert dhcp.get("assigned_ip", "0.0.0.0") == your_ip
        assert dhcp.get("client_ip", "0.0.0.0") == row["dhcp.ip.client"]
        assert dhcp["option"].get("requested_ip_address", "") == row[
            "dhcp.option.requested_ip_address"]
        assert dhcp["option"].get("server_identifier", "") == row["dhcp.option.dhcp_server_id"]
        assert (doc["source"]["ip"], doc["destination"]["ip"]) == (row["ip.src"], row["ip.dst"])
        assert doc["source"]["port"] == int(row["udp.srcport"])
        # DHCP roles: a BOOTREPLY goes from the server to the client.
        reply = row["dhcp.type"] == "2"
        assert doc["client"]["ip"] == (row["ip.dst"] if reply else row["ip.src"])
        assert doc["server"]["ip"] == (row["ip.src"] if reply else row["ip.dst"])
        assert doc["status"] == "OK" and doc["network"]["protocol"] == "dhcpv4"


def test_dhcp_capture_holds_nak_then_dora_then_release():
    docs = decode_file(PCAPS / "dhcpv4" / "dora_nak_release.pcap")
    assert [d["dhcpv4"]["option"]["message_type"] for d in docs] == [
        "request", "nak", "discover", "offer", "request", "ack", "release"]
    ack = docs[5]["dhcpv4"]
    assert ack["option"]["ip_address_lease_time_sec"] == 3600
    assert ack["option"]["router"] == "10.99.0.1"
    assert ack["option"]["dns_servers"] == ["10.99.0.1", "10.99.0.2"]
    assert ack["option"]["domain_name"] == "example.com"
