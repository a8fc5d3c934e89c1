"""Drift wording (``alembic_schemas.autogenerate.compare.describe``): one line per difference
``check`` finds, over the diff tuples Alembic's (and the package's own) operations give."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from alembic.operations import ops

from alembic_schemas.autogenerate import ops as own_ops
from alembic_schemas.autogenerate.compare import describe

metadata = sa.MetaData()
parent = sa.Table("parent", metadata, sa.Column("id", sa.Integer, primary_key=True))
item = sa.Table(
    "item",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("code", sa.Integer),
    sa.Column("parent_id", sa.Integer, sa.ForeignKey("parent.id", name="item_parent_fk")),
    sa.Column("other_id", sa.Integer),
    sa.ForeignKeyConstraint(["other_id"], ["parent.id"]),
    sa.Index("item_code", "code"),
    sa.CheckConstraint("code > 0"),  # unnamed: the default naming convention names indexes only
    sa.UniqueConstraint("code", name="item_code_key"),
    schema="core",
)
NAMED_FK, UNNAMED_FK = sorted(item.foreign_key_constraints, key=lambda fk: fk.name is None)
(INDEX,) = item.indexes
UNIQUE = next(c for c in item.constraints if isinstance(c, sa.UniqueConstraint))
CHECK = next(c for c in item.constraints if isinstance(c, sa.CheckConstraint))


def _diff(op: ops.MigrateOperation) -> Any:
    return op.to_diff_tuple()  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("diff", "line"),
    [
        (_diff(ops.CreateTableOp.from_table(item)), "add table core.item"),
        (_diff(ops.DropTableOp.from_table(parent)), "remove table parent"),
        (
            _diff(
                ops.AddColumnOp.from_column_and_tablename("core", "item", sa.Column("n", sa.Text))
            ),
            "add column core.item.n",
        ),
        (
            _diff(
                ops.DropColumnOp.from_column_and_tablename(None, "item", sa.Column("n", sa.Text))
            ),
            "remove column item.n",
        ),
        (_diff(ops.CreateIndexOp.from_index(INDEX)), "add index core.item.item_code"),
        (_diff(ops.DropIndexOp.from_index(INDEX)), "remove index core.item.item_code"),
        (_diff(ops.AddConstraintOp.from_constraint(CHECK)), "add constraint core.item.(unnamed)"),
        (
            _diff(ops.AddConstraintOp.from_constraint(NAMED_FK)),
            "add fk item_parent_fk on core.item",
        ),
        (
            _diff(ops.DropConstraintOp.from_constraint(NAMED_FK)),
            "remove fk item_parent_fk on core.item",
        ),
        (_diff(ops.AddConstraintOp.from_constraint(UNNAMED_FK)), "add fk on core.item"),
        (
            _diff(ops.AddConstraintOp.from_constraint(UNIQUE)),
            "add constraint core.item.item_code_key",
        ),
        (
            _diff(own_ops.CreateEnumTypeOp(("core", "mood"), "core", ["a"])),
            "add enum type core.mood",
        ),
        (_diff(own_ops.DropEnumTypeOp(("t_a", "mood"), None)), "remove enum type t_a.mood"),
        (
            _diff(own_ops.CreateSequenceOp(("core", "seq"), sa.Sequence("seq", schema="core"))),
            "add sequence core.seq",
        ),
        (
            _diff(own_ops.DropSequenceOp(("core", "seq"), sa.Sequence("seq"))),
            "remove sequence core.seq",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_each_difference_reads_as_one_line_naming_the_object(diff: Any, line: str) -> None:
    assert describe(diff) == line


def test_column_modifications_read_as_one_line_from_old_to_new() -> None:
    diff = _diff(
        ops.AlterColumnOp(
            "item",
            "code",
            schema="core",
            existing_type=sa.Integer(),
            modify_type=sa.BigInteger(),
            existing_nullable=True,
            modify_nullable=False,
            existing_server_default=None,
            modify_server_default="0",
        )
    )
    assert describe(diff) == (
        "modify type of core.item.code: INTEGER -> BIGINT; "
        "modify nullable of core.item.code: nullable -> not null; "
        "modify default of core.item.code: none -> '0'"
    )


def test_a_hand_built_modification_without_a_schema_leaves_it_out() -> None:
    diff = ("modify_nullable", None, "item", "code", {"existing_type": sa.Integer()}, False, True)
    assert describe(diff) == "modify nullable of item.code: not null -> nullable"
    comment = ("modify_comment", "core", "item", "code", {}, None, "the code")
    assert describe(comment) == "modify comment of core.item.code: none -> 'the code'"


def test_a_difference_of_an_unknown_kind_still_names_its_object() -> None:
    assert describe(("remove_constraint", UNIQUE)) == "remove constraint core.item.item_code_key"
    assert describe(("add_table_comment", item)) == "add table comment core.item"
