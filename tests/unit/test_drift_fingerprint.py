"""Fleet drift's pure part (no database): fingerprints from the per-kind catalog hashes, and
grouping. The catalog side (each kind's hash, deparsed as compare reads the tenant) is proved
against one compare per tenant in tests/test_fleet_read.py."""

from __future__ import annotations

from alembic_schemas.drift import fingerprints, group, group_id

HASHES = {
    "schemas": {"t_a": "true", "t_b": "true", "t_c": "true", "t_d": "false"},
    "columns": {"t_a": "c1", "t_b": "c1", "t_c": "c2", "t_d": "c1"},
    "indexes": {"t_a": "i1", "t_b": "i1", "t_c": "i1", "t_d": "i1"},
    "functions": {},  # no schema has any
}


def test_schemas_with_equal_hashes_of_every_kind_share_a_fingerprint() -> None:
    found = fingerprints(["t_a", "t_b", "t_c", "t_d"], HASHES)
    assert found["t_a"] == found["t_b"]
    assert found["t_a"] != found["t_c"], "one kind differs"
    assert found["t_a"] != found["t_d"], "t_d cannot be read: compare sees nothing of it"


def test_a_kind_missing_for_a_schema_differs_from_one_present() -> None:
    hashes = {"sequences": {"t_a": "s1"}, "schemas": {"t_a": "true", "t_b": "true"}}
    found = fingerprints(["t_a", "t_b"], hashes)
    assert found["t_a"] != found["t_b"], "t_b has no sequence at all"
    assert fingerprints(["t_b", "t_c"], {"sequences": {}})["t_b"] == (None,)


def test_the_order_of_the_kinds_does_not_matter() -> None:
    reordered = dict(reversed(list(HASHES.items())))
    assert fingerprints(["t_a"], HASHES) == fingerprints(["t_a"], reordered)


def test_groups_keep_the_order_of_the_schemas() -> None:
    assert group({"c": 1, "a": 2, "b": 1, "d": 3}) == [["c", "b"], ["a"], ["d"]]
    assert group({}) == []


def test_group_ids_are_short_stable_and_tell_structures_apart() -> None:
    found = fingerprints(["t_a", "t_b", "t_c", "t_d"], HASHES)
    assert group_id(found["t_a"]) == group_id(found["t_b"])
    assert len({group_id(found[s]) for s in ("t_a", "t_c", "t_d")}) == 3
    assert len(group_id(found["t_a"])) == 12
    assert group_id(found["t_a"]) == group_id(fingerprints(["t_a"], HASHES)["t_a"])
