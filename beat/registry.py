"""Decoder discovery through the `wirebeat.decoders` entry-point group.

Built-in decoders are registered in pyproject.toml exactly as a plug-in
registers its own, so the engine has one way of finding them. A name, a port
or an IP protocol claimed twice fails at start-up naming both claimants.
The entry points are read by wirebeat.distinfo (the metadata directories on
sys.path, as importlib.metadata reads them, without its import: ~30 ms of
every start-up), or by importlib.metadata where distinfo cannot see
everything (zip archives, eggs, import hooks providing distributions).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from wirebeat import distinfo
from wirebeat.decoders.api import DecoderSpec

__all__ = ["RegistryError", "Registered", "discover", "check_routes"]

GROUP = "wirebeat.decoders"


class RegistryError(Exception):
    """A plug-in cannot be loaded or conflicts with another."""


@dataclass(frozen=True, slots=True)
class Registered:
    """A decoder found through its entry point, and where from."""

    spec: DecoderSpec
    origin: str          # "module:attribute (distribution version)"


def _entry_points() -> Iterator[tuple[str, str, str, Callable[[], Any]]]:
    """(name, value, "distribution version", load) of every entry point in GROUP."""
    if distinfo.usable():
        # "name version" per distribution, read once: the built-in decoders share one.
        labels: dict[str, str] = {}
        for ep in distinfo.entry_points(GROUP):
            label = labels.get(ep.path) or labels.setdefault(ep.path, ep.dist_label())
            yield ep.name, ep.value, label, ep.load
        return
    from importlib.metadata import entry_points
    dists: dict[int, str] = {}
    for meta in entry_points(group=GROUP):
        if meta.dist is None:
            label = "unknown distribution"
        else:
            label = dists.get(id(meta.dist)) or dists.setdefault(id(meta.dist),
                                                                   f"{meta.dist.name} {meta.dist.version}")
        yield meta.name, meta.value, label, meta.load


def discover() -> list[Registered]:
    """Load every registered decoder, sorted by name."""
    found: dict[str, Registered] = {}
    for name, value, dist, load in _entry_points():
        origin = f"{value} ({dist})"
        try:
            spec = load()
        except Exception as err:   # a broken plug-in: say which and why
            raise RegistryError(f"decoder plug-in '{name}' ({origin}) failed to load: "
                                f"{type(err).__name__}: {err}") from None
        if not isinstance(spec, DecoderSpec):
            raise RegistryError(f"decoder plug-in '{name}' ({origin}) is not a DecoderSpec")
        if spec.name in found:
            if found[spec.name].origin == origin:
                continue        # the same distribution seen twice on sys.path
            raise RegistryError(f"decoder name '{spec.name}' is claimed by both "
                                f"{found[spec.name].origin} and {origin}")
        found[spec.name] = Registered(spec, origin)
    return [found[name] for name in sorted(found)]


def check_routes(enabled: list[tuple[Registered, list[int]]]) -> None:
    """Fail when two enabled decoders claim the same port (per transport) or IP protocol."""
    owners: dict[tuple[str, int], Registered] = {}
    for registered, ports in enabled:
        spec = registered.spec
        claims = [("ip protocol", p) for p in spec.ip_protocols]
        if spec.datagram is not None and ports:
            claims += [("udp port", p) for p in ports]
        if spec.stream is not None:
            claims += [("tcp port", p) for p in ports]
        for claim in claims:
            other = owners.get(claim)
            if other is not None and other.spec.name != spec.name:
                raise RegistryError(f"{claim[0]} {claim[1]} is claimed by both decoder "
                                    f"'{other.spec.name}' ({other.origin}) and "
                                    f"'{spec.name}' ({registered.origin})")
            owners[claim] = registered
