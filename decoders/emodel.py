"""Call quality estimate: the ITU-T G.107 E-model (narrowband), R-factor and MOS.

    R = (Ro - Is) - Id - Ie,eff + A

- Ro - Is: every non-IP parameter (loudness ratings, noise, sidetone, echo
  loss) at the G.107 default values, which give R = 93.2 for a delay-free,
  loss-free G.711 call (G.107 §7.6). A (advantage factor) = 0.
- Id: the delay impairment from the absolute one-way delay Ta (G.107 §7.3,
  Idd only). With the default echo values (TELR 65 dB, WEPL 110 dB) talker and
  listener echo cost next to nothing, so Idte and Idle are left out.
- Ie,eff = Ie + (95 - Ie) * Ppl / (Ppl / BurstR + Bpl) (G.107 §7.4): Ie and
  Bpl are the codec's, from ITU-T G.113 Appendix I; Ppl the percentage of
  packets lost in the network or discarded by the jitter buffer; BurstR = 1
  (losses taken as random: the per-stream counters do not keep loss runs).
- MOS (conversational quality estimate, MOS-CQE) from R by G.107 Annex B.

Pure functions over numbers: no state, no I/O. docs/fields-rtp.md explains
the inputs a document carries and the estimate's limits.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["CODEC_IMPAIRMENTS", "DEFAULT_R", "Quality", "codec_impairment", "delay_impairment",
           "estimate", "mos_from_r"]

DEFAULT_R = 93.2          # G.107 with every parameter at its default value

# ITU-T G.113 Appendix I: encoding name (as in SDP rtpmap / RFC 3551) -> (Ie, Bpl).
# G.711 with packet loss concealment (G.711 Appendix I): Bpl 25.1. G.729 and
# G.723.1 (6.3 kbit/s) values are those given with VAD, the common deployment.
CODEC_IMPAIRMENTS: dict[str, tuple[float, float]] = {
    "PCMU": (0.0, 25.1),
    "PCMA": (0.0, 25.1),
    "G729": (11.0, 19.0),
    "G723": (15.0, 16.1),
}
# A codec G.113 does not table (wideband, opus, an unknown dynamic type) is
# scored as G.711 with PLC, and the document says so (quality.codec_basis).
ASSUMED_CODEC = "PCMU"


@dataclass(frozen=True, slots=True)
class Quality:
    """The E-model's figures for one stream report."""

    r_factor: float
    mos: float
    codec_impairment: float          # Ie
    loss_robustness: float           # Bpl
    codec_basis: str                 # "g113" or "assumed_g711"
    effective_loss_pct: float        # Ppl: lost + discarded, percent of expected
    delay_impairment: float          # Id
    one_way_delay_ms: float          # Ta used for Id


def codec_impairment(codec: str) -> tuple[float, float, str]:
    """(Ie, Bpl, basis) of an encoding name, case-insensitive."""
    known = CODEC_IMPAIRMENTS.get(codec.upper())
    if known is not None:
        return known[0], known[1], "g113"
    ie, bpl = CODEC_IMPAIRMENTS[ASSUMED_CODEC]
    return ie, bpl, "assumed_g711"


def delay_impairment(one_way_delay_ms: float) -> float:
    """Idd of G.107 §7.3 for an absolute one-way delay Ta in ms (0 up to 100 ms)."""
    if one_way_delay_ms <= 100.0:
        return 0.0
    x = math.log10(one_way_delay_ms / 100.0) / math.log10(2.0)
    return 25.0 * ((1.0 + x ** 6) ** (1.0 / 6.0) - 3.0 * (1.0 + (x / 3.0) ** 6) ** (1.0 / 6.0) + 2.0)


def mos_from_r(r: float) -> float:
    """G.107 Annex B: MOS-CQE from the rating R."""
    if r <= 0.0:
        return 1.0
    if r >= 100.0:
        return 4.5
    return 1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6


def estimate(codec: str, expected: int, lost: int, discarded: int,
             one_way_delay_ms: float) -> Quality:
    """The E-model estimate for a stream: its codec, packets expected, lost in the
    network and discarded by the jitter buffer, and the one-way delay."""
    ie, bpl, basis = codec_impairment(codec)
    ppl = 100.0 * min(max(lost, 0) + discarded, expected) / expected if expected > 0 else 0.0
    ie_eff = ie + (95.0 - ie) * ppl / (ppl + bpl)          # BurstR = 1
    idd = delay_impairment(one_way_delay_ms)
    r = DEFAULT_R - idd - ie_eff
    return Quality(r_factor=round(r, 2), mos=round(mos_from_r(r), 2), codec_impairment=ie,
                   loss_robustness=bpl, codec_basis=basis, effective_loss_pct=round(ppl, 4),
                   delay_impairment=round(idd, 2), one_way_delay_ms=round(one_way_delay_ms, 3))
