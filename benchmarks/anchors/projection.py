"""Project a loopback measurement onto real networks from its measured rounds and bytes (a projection, not a run).

projected = measured seconds + rounds x one-way latency + bytes sent by the busiest party x 8 / bandwidth.
The loopback figure already holds the compute and the (small) loopback transfer time; the projection adds what a
link of the stated latency and bandwidth would add if nothing overlapped (an upper-side estimate: real runs overlap
some transfer with compute). Without a round count the latency term cannot be formed and the projection is None.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Link:
    """A network between the parties: a name, bandwidth (bits/s) and one-way latency (s)."""

    name: str
    bits_per_second: float
    latency_s: float


LINKS = (Link("10 Gbps / 0.1 ms", 10e9, 0.1e-3),
         Link("1 Gbps / 1 ms", 1e9, 1e-3),
         Link("100 Mbps / 40 ms", 100e6, 40e-3))


def project(seconds: float, rounds: int | None, bytes_per_party: list[int] | None, link: Link) -> float | None:
    """The projected wall time of one measured run over `link`, or None without rounds or bytes."""
    if rounds is None or not bytes_per_party:
        return None
    if seconds < 0 or rounds < 0 or min(bytes_per_party) < 0:
        raise ValueError("seconds, rounds and bytes must be non-negative")
    return seconds + rounds * link.latency_s + max(bytes_per_party) * 8 / link.bits_per_second


def project_all(seconds: float, rounds: int | None, bytes_per_party: list[int] | None,
                links: tuple[Link, ...] = LINKS) -> dict[str, float | None]:
    """{link name: projected seconds} for every link."""
    return {link.name: project(seconds, rounds, bytes_per_party, link) for link in links}
