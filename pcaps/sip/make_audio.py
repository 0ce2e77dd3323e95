"""Write the RTP that sipp plays (`play_pcap_audio`) in the calls of make_captures.sh.

    .venv/bin/python pcaps/sip/make_audio.py OUTDIR

One pcap per call side, built with tests/pcapgen.py through the builders of
pcaps/rtp/make_captures.py: 4 s of 20 ms packets. sipp keeps each packet's
RTP header and payload and its timing, and rewrites addresses and ports (a
packet to the file's port + 1, RTCP, goes to the peer's media port + 1).

- call_pcmu_uac / _uas: PCMU (8 kHz tone); the caller also sends an RTCP
  sender report with SDES CNAME after 2 s.
- call_two_codecs_uac: PCMU; call_two_codecs_uas: opus, dynamic type 111,
  48 kHz clock (the SDP of that call maps 111 to opus/48000/2).
- call_dtmf_uac: PCMU with two RFC 4733 telephone events in the same stream
  (type 101): digit 5 from 1.0 s and # from 2.2 s, 220 ms each (marker on the
  first packet, end bit on the last three); audio pauses during an event.
  call_dtmf_uas: PCMU.
- call_tcp_uac / _uas: PCMU.
"""
from __future__ import annotations

import struct
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "rtp"))
import make_captures as mc  # noqa: E402

SLOTS = 200                 # 4 s of 20 ms packets
SRC, DST = "192.0.2.1", "192.0.2.2"      # rewritten by sipp
SPORT, DPORT = 6000, 7000


def _pcmu(ssrc: int, first_seq: int, first_ts: int) -> mc.Sender:
    return mc.Sender(SRC, DST, SPORT, DPORT, ssrc, 0, 8000, first_seq, first_ts)


def basic(ssrc: int, with_rtcp: bool) -> list[mc.Packet]:
    sender = _pcmu(ssrc, 1000 + (ssrc & 0xFF), 8000 * (ssrc & 0xFF))
    packets = [(mc.START_NS + i * mc.PTIME_NS, sender.packet(i)) for i in range(SLOTS)]
    if with_rtcp:
        at = mc.START_NS + 100 * mc.PTIME_NS + 5 * mc.MS
        report = mc.rtcp_sr(ssrc, at, sender.first_ts + 100 * 160, 100, 100 * 160) \
            + mc.rtcp_sdes(ssrc, "caller@wirebeat.test")
        packets.append((at, mc.frame(SRC, DST, SPORT + 1, DPORT + 1, report)))
    return packets


def opus(ssrc: int) -> list[mc.Packet]:
    sender = mc.Sender(SRC, DST, SPORT, DPORT, ssrc, 111, 48000, 5000, 960 * 1000, 80)
    payload = bytes(range(80))          # not an encoder's output: nobody decodes it
    return [(mc.START_NS + i * mc.PTIME_NS, sender.packet(i, payload=payload))
            for i in range(SLOTS)]


def event_payload(event: int, end: bool, duration: int) -> bytes:
    """RFC 4733 §2.3 payload: event, E bit and volume 10, duration in timestamp units."""
    return struct.pack("!BBH", event, (0x80 if end else 0) | 10, duration)


def dtmf(ssrc: int) -> list[mc.Packet]:
    sender = _pcmu(ssrc, 3000, 24000)
    packets: list[mc.Packet] = []
    seq = sender.first_seq
    events = {50: 5, 110: 11}           # first slot -> event (5, and 11 = #)
    slot = 0
    while slot < SLOTS:
        t = mc.START_NS + slot * mc.PTIME_NS
        if slot in events:
            start_ts = sender.first_ts + slot * 160
            for n in range(11):         # 8 packets while the key is down, then 3 end packets
                end = n >= 8
                duration = 160 * min(n + 1, 8) + (160 if end else 0)
                packets.append((t + n * mc.PTIME_NS,
                                sender.packet(slot, seq=seq, payload_type=101, timestamp=start_ts,
                                              marker=n == 0,
                                              payload=event_payload(events[slot], end, duration))))
                seq += 1
            slot += 11
            continue
        packets.append((t, sender.packet(slot, seq=seq)))
        seq += 1
        slot += 1
    return packets


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    mc.write(out / "call_pcmu_uac.pcap", basic(0x5A5A0001, with_rtcp=True))
    mc.write(out / "call_pcmu_uas.pcap", basic(0x5A5A0002, with_rtcp=False))
    mc.write(out / "call_two_codecs_uac.pcap", basic(0x5A5A0003, with_rtcp=False))
    mc.write(out / "call_two_codecs_uas.pcap", opus(0x5A5A0004))
    mc.write(out / "call_dtmf_uac.pcap", dtmf(0x5A5A0005))
    mc.write(out / "call_dtmf_uas.pcap", basic(0x5A5A0006, with_rtcp=False))
    mc.write(out / "call_tcp_uac.pcap", basic(0x5A5A0007, with_rtcp=False))
    mc.write(out / "call_tcp_uas.pcap", basic(0x5A5A0008, with_rtcp=False))


if __name__ == "__main__":
    main()
