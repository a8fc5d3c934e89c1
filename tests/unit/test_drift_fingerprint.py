"""Fleet drift's pure part (no database): normalising deparsed SQL, fingerprints, grouping.

A fingerprint may differ where compare would not (one more compare); it must never be equal
where compare would differ. Both directions are exercised: what must group, what must not.
"""

from __future__ import annotations

from typing import Any

from alembic_schemas.catalog import STRUCTURE_KINDS
from alembic_schemas.drift import OWN, fingerprints, group, group_id, normalise

Q = "t_001"  # quote_ident of a plain name is the name itself


def test_text_without_the_name_is_left_as_it_is() -> None:
    assert normalise("nextval('ticket_seq'::regclass)", Q, Q) == (
        "nextval('ticket_seq'::regclass)",
        False,
    )


def test_a_qualification_by_the_own_schema_becomes_the_marker() -> None:
    text = "CREATE INDEX ix ON t_001.item USING btree (name)"
    assert normalise(text, Q, Q) == (f"CREATE INDEX ix ON {OWN}.item USING btree (name)", False)


def test_a_quoted_schema_name_is_matched_as_postgresql_quotes_it() -> None:
    name, quoted = 'Acme "q"', '"Acme ""q"""'
    text = f"FOREIGN KEY (a) REFERENCES {quoted}.account(id)"
    assert normalise(text, name, quoted) == (
        f"FOREIGN KEY (a) REFERENCES {OWN}.account(id)",
        False,
    )


def test_only_whole_identifiers_followed_by_a_dot_are_qualifications() -> None:
    for text in ("x t_0011.item", "xt_001.item", "t_001 .item", "ON t_001_x.item"):
        assert normalise(text, Q, Q) == (text, False), text


def test_a_quoted_identifier_holding_the_name_is_a_name_not_a_qualification() -> None:
    text = 'CREATE INDEX "t_001.x" ON other.item USING btree (a)'
    assert normalise(text, Q, Q) == (text, False)


def test_a_name_literal_cast_to_a_reg_type_is_qualified_like_any_name() -> None:
    assert normalise("nextval('t_001.ticket_seq'::regclass)", Q, Q) == (
        f"nextval('{OWN}.ticket_seq'::regclass)",
        False,
    )
    name, quoted = "it's", '"it\'s"'
    text = "nextval('\"it''s\".seq'::regclass)"
    assert normalise(text, name, quoted) == (f"nextval('{OWN}.seq'::regclass)", False)


def test_any_other_literal_mentioning_the_name_is_reported() -> None:
    for text in ("'t_001'::character varying", "'t_001.x'::text", "('a t_001 b'::text)"):
        assert normalise(text, Q, Q) == (text, True), text


def _structure(schema: str, **overrides: list[tuple[Any, ...]]) -> dict[str, list[tuple[Any, ...]]]:
    """Catalog rows of one schema shaped like catalog.structure's, qualified by ``schema``."""
    q = schema
    rows: dict[str, list[tuple[Any, ...]]] = {
        "relations": [(schema, "item", "r", "p", None, None, None, None)],
        "columns": [
            (schema, "item", 1, "id", "integer", True, None, "", "", None, None),
            (
                schema,
                "item",
                2,
                "n",
                "integer",
                False,
                f"nextval('{q}.s'::regclass)",
                "",
                "",
                None,
                None,
            ),
            (schema, "item", 3, "mood", f"{q}.mood", False, None, "", "", None, None),
        ],
        "constraints": [(schema, "item", "pk_item", "p", "PRIMARY KEY (id)", True)],
        "indexes": [
            (
                schema,
                "item",
                "pk_item",
                f"CREATE UNIQUE INDEX pk_item ON {q}.item USING btree (id)",
                True,
                True,
                None,
            )
        ],
        "sequences": [(schema, "s", "bigint", 1, 1, 1, 2**63 - 1, 1, False, None, None, None)],
        "types": [(schema, "mood", "e", "{a,b}", None, False, None, None)],
    }
    rows.update(overrides)
    return rows


def _merge(*structures: dict[str, list[tuple[Any, ...]]]) -> dict[str, list[tuple[Any, ...]]]:
    return {k: [r for s in structures for r in s.get(k, [])] for k in STRUCTURE_KINDS}


def test_schemas_equal_but_for_their_own_name_share_a_fingerprint() -> None:
    found = fingerprints(_merge(_structure("t_a"), _structure("t_b")), {"t_a": "t_a", "t_b": "t_b"})
    assert found["t_a"] == found["t_b"]
    assert group_id(found["t_a"]) == group_id(found["t_b"])


def test_a_changed_default_type_or_index_or_label_gives_another_fingerprint() -> None:
    base = _structure("t_b")
    changes = {
        "default": {
            "columns": [
                base["columns"][0],
                base["columns"][1][:6] + ("0",) + base["columns"][1][7:],
                base["columns"][2],
            ]
        },
        "type": {
            "columns": [
                base["columns"][0][:4] + ("bigint",) + base["columns"][0][5:],
                *base["columns"][1:],
            ]
        },
        "index dropped": {"indexes": []},
        "enum label": {"types": [("t_b", "mood", "e", "{a,b,c}", None, False, None, None)]},
        "sequence option": {
            "sequences": [("t_b", "s", "bigint", 5, 1, 1, 2**63 - 1, 1, False, None, None, None)]
        },
        "constraint name": {
            "constraints": [("t_b", "item", "item_pkey", "p", "PRIMARY KEY (id)", True)]
        },
    }
    for what, change in changes.items():
        found = fingerprints(
            _merge(_structure("t_a"), _structure("t_b", **change)), {"t_a": "t_a", "t_b": "t_b"}
        )
        assert found["t_a"] != found["t_b"], what


def test_column_order_counts_but_attnum_gaps_do_not() -> None:
    cols = _structure("t_b")["columns"]
    gap = [c[:2] + (c[2] * 10,) + c[3:] for c in cols]  # dropped and re-added columns
    swapped = [cols[0], cols[2][:2] + (2,) + cols[2][3:], cols[1][:2] + (3,) + cols[1][3:]]
    quoted = {"t_a": "t_a", "t_b": "t_b"}
    same = fingerprints(_merge(_structure("t_a"), _structure("t_b", columns=gap)), quoted)
    assert same["t_a"] == same["t_b"]
    moved = fingerprints(_merge(_structure("t_a"), _structure("t_b", columns=swapped)), quoted)
    assert moved["t_a"] != moved["t_b"]


def test_a_literal_mentioning_the_own_name_keeps_the_schema_apart() -> None:
    def with_default(schema: str) -> dict[str, list[tuple[Any, ...]]]:
        col = (schema, "item", 4, "tag", "text", False, f"'{schema}'::text", "", "", None, None)
        return _structure(schema, columns=[*_structure(schema)["columns"], col])

    found = fingerprints(
        _merge(with_default("t_a"), with_default("t_b")), {"t_a": "t_a", "t_b": "t_b"}
    )
    assert found["t_a"] != found["t_b"], "compare sees 't_a' and 't_b': different defaults"


def test_names_are_never_normalised() -> None:
    def with_table(schema: str) -> dict[str, list[tuple[Any, ...]]]:
        extra = (schema, f"{schema}.x", "r", "p", None, None, None, None)
        return _structure(schema, relations=[*_structure(schema)["relations"], extra])

    found = fingerprints(_merge(with_table("t_a"), with_table("t_b")), {"t_a": "t_a", "t_b": "t_b"})
    assert found["t_a"] != found["t_b"], 'tables named "t_a.x" and "t_b.x" differ'


def test_a_reference_to_another_schema_is_not_the_own_schema() -> None:
    def referencing(schema: str, target: str) -> dict[str, list[tuple[Any, ...]]]:
        fk = (schema, "item", "fk", "f", f"FOREIGN KEY (n) REFERENCES {target}.item(id)", True)
        return _structure(schema, constraints=[*_structure(schema)["constraints"], fk])

    quoted = {"t_a": "t_a", "t_b": "t_b"}
    found = fingerprints(_merge(referencing("t_a", "t_a"), referencing("t_b", "t_a")), quoted)
    assert found["t_a"] != found["t_b"], "t_a refers to itself, t_b to t_a"
    found = fingerprints(_merge(referencing("t_a", "t_a"), referencing("t_b", "t_b")), quoted)
    assert found["t_a"] == found["t_b"]


def test_schemas_without_objects_share_a_fingerprint() -> None:
    found = fingerprints(_merge(), {"t_a": "t_a", "t_b": "t_b"})
    assert found["t_a"] == found["t_b"]


def test_groups_keep_the_order_of_the_schemas() -> None:
    assert group({"c": 1, "a": 2, "b": 1, "d": 3}) == [["c", "b"], ["a"], ["d"]]
    assert group({}) == []
