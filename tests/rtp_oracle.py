"""RFC 3550 §6.4.1 interarrival jitter computed the textbook way: the tests' independent oracle."""
from __future__ import annotations


def rfc3550_jitter(arrivals_ms: list[float], timestamps: list[int], rate: int) -> list[float]:
    """The estimate after each packet: J += (|D| - J) / 16, D from consecutive packets."""
    j, out = 0.0, []
    for i in range(1, len(arrivals_ms)):
        d = (arrivals_ms[i] - arrivals_ms[i - 1]) - (timestamps[i] - timestamps[i - 1]) * 1000 / rate
        j += (abs(d) - j) / 16
        out.append(j)
    return out
