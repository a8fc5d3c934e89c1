"""Planning, as pure code over revision ids: which tenants a shard takes, and the linear way
from a schema's current revision to the target."""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

Heads = tuple[str, ...]
# The parent of a revision: one id, None at base, or a tuple at a merge point.
Parent = Callable[[str], "str | tuple[str, ...] | None"]
# ASCII digits only: str.isdigit() also takes '²', which int() refuses.
_SHARD = re.compile(r"([0-9]+)/([0-9]+)")


@dataclass
class Plan:
    """Where each schema stands before the run, and which ones to migrate."""

    target: Heads
    current: dict[str, Heads]
    todo: list[str] = field(default_factory=list)


def shard_of(tenant: str, shards: int) -> int:
    """Stable shard number (1..shards) of a tenant name."""
    return zlib.crc32(tenant.encode("utf-8")) % shards + 1


def select_shard(tenants: Iterable[str], shard: tuple[int, int] | None) -> list[str]:
    if shard is None:
        return list(tenants)
    k, n = shard
    return [t for t in tenants if shard_of(t, n) == k]


def parse_shard(text: str) -> tuple[int, int] | None:
    """``K/N`` (1 <= K <= N) to (K, N); None when malformed."""
    found = _SHARD.fullmatch(text)
    if found is None or not 1 <= int(found[1]) <= int(found[2]):
        return None
    return int(found[1]), int(found[2])


def linear_path(current: Heads, target: Heads, parent: Parent) -> list[str] | None:
    """The revisions from ``current`` (exclusive) up to ``target``, oldest first, when that way
    is one linear chain; None otherwise (several heads, a merge point on the way, or
    ``current`` not an ancestor of ``target``: a downgrade or another branch)."""
    if len(target) != 1 or len(current) > 1:
        return None
    chain: list[str] = []
    rev: str | None = target[0]
    start = current[0] if current else None
    while rev != start:
        if rev is None:
            return None
        down = parent(rev)
        if isinstance(down, tuple):
            return None
        chain.append(rev)
        rev = down
    chain.reverse()
    return chain
