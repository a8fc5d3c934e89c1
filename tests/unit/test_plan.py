"""Planning as pure code (``alembic_schemas.executor.plan``): the linear way through a revision
graph, and which tenants a shard takes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alembic_schemas.executor.plan import linear_path, parse_shard, select_shard, shard_of

# base - a - b - c - m - n        m merges c and x; y branches off b
#         \         /
#          x ------'
#              b - y
GRAPH: dict[str, str | tuple[str, ...] | None] = {
    "a": None,
    "b": "a",
    "c": "b",
    "x": "a",
    "m": ("c", "x"),
    "n": "m",
    "y": "b",
}


def _path(current: tuple[str, ...], target: tuple[str, ...]) -> list[str] | None:
    return linear_path(current, target, GRAPH.__getitem__)


def test_from_base_the_path_is_every_revision_oldest_first() -> None:
    assert _path((), ("c",)) == ["a", "b", "c"]


def test_from_a_revision_the_path_starts_after_it() -> None:
    assert _path(("a",), ("c",)) == ["b", "c"]
    assert _path(("b",), ("y",)) == ["y"]


def test_at_the_target_there_is_nothing_to_do() -> None:
    assert _path(("c",), ("c",)) == []


def test_a_path_after_a_merge_point_is_linear() -> None:
    assert _path(("m",), ("n",)) == ["n"]


def test_a_merge_point_on_the_way_has_no_linear_path() -> None:
    assert _path(("c",), ("n",)) is None
    assert _path((), ("m",)) is None


def test_a_downgrade_has_no_linear_path() -> None:
    assert _path(("c",), ("a",)) is None


def test_another_branch_has_no_linear_path() -> None:
    assert _path(("y",), ("c",)) is None
    assert _path(("x",), ("c",)) is None


def test_several_heads_on_either_side_have_no_linear_path() -> None:
    assert _path(("c", "x"), ("n",)) is None
    assert _path(("a",), ("c", "y")) is None
    assert _path(("a",), ()) is None


@st.composite
def trees(draw: st.DrawFn) -> dict[str, str | None]:
    """A revision tree: each revision's parent is an earlier one, or base."""
    size = draw(st.integers(1, 12))
    return {
        f"r{i}": (None if i == 0 else draw(st.sampled_from([None, *(f"r{j}" for j in range(i))])))
        for i in range(size)
    }


@given(trees(), st.data())
def test_a_found_path_walks_parent_links_from_current_to_target(
    tree: dict[str, str | None], data: st.DataObject
) -> None:
    target = data.draw(st.sampled_from(sorted(tree)))
    current = data.draw(st.sampled_from([None, *sorted(tree)]))
    path = linear_path(() if current is None else (current,), (target,), tree.__getitem__)
    ancestors, rev = [], tree[target]
    while rev is not None:
        ancestors.append(rev)
        rev = tree[rev]
    if current is not None and current != target and current not in ancestors:
        assert path is None
        return
    assert path is not None
    assert path[-1:] == ([target] if current != target else [])
    below = [current, *path]
    assert all(tree[rev] == down for down, rev in zip(below, path, strict=False))


# --- shards ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "shard"), [("1/1", (1, 1)), ("1/4", (1, 4)), ("4/4", (4, 4)), ("12/100", (12, 100))]
)
def test_parse_shard_reads_k_of_n(text: str, shard: tuple[int, int]) -> None:
    assert parse_shard(text) == shard


@pytest.mark.parametrize(
    "text",
    ["", "1", "1/", "/4", "0/4", "5/4", "1/0", "-1/4", "a/b", " 1/4", "1/4\n", "1/2/3", "²/3"],
)
def test_parse_shard_refuses_anything_else(text: str) -> None:
    assert parse_shard(text) is None


names = st.lists(st.text(min_size=1, max_size=20), unique=True, max_size=40)


@given(names, st.integers(1, 9))
def test_the_shards_of_a_list_partition_it_in_order(tenants: list[str], n: int) -> None:
    shards = [select_shard(tenants, (k, n)) for k in range(1, n + 1)]
    assert sorted(t for shard in shards for t in shard) == sorted(tenants)
    for k, shard in enumerate(shards, start=1):
        assert shard == [t for t in tenants if t in shard], "order kept"
        assert all(shard_of(t, n) == k for t in shard)


@given(names)
def test_no_shard_selects_every_tenant(tenants: list[str]) -> None:
    assert select_shard(iter(tenants), None) == tenants


def test_a_tenant_is_in_the_same_shard_in_every_process() -> None:
    """Parallel CI jobs each run ``--shard K/N`` in their own process: the shard of a name must
    not depend on the process (Python's hash() does, through PYTHONHASHSEED)."""
    tenants = [f"t_{i:03d}" for i in range(50)] + ["Tenant A", "é日\U0001f600"]
    code = (
        "import sys; from alembic_schemas.executor.plan import shard_of;"
        "print([shard_of(t, 7) for t in sys.argv[1:]])"
    )
    seen = set()
    for seed in ("1", "2"):
        proc = subprocess.run(
            [sys.executable, "-c", code, *tenants],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        )
        seen.add(proc.stdout)
    assert seen == {f"{[shard_of(t, 7) for t in tenants]}\n"}
    assert len({shard_of(t, 7) for t in tenants}) == 7, "50 names reach every shard"
