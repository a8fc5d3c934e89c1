"""New schemas of histories that start from ``metadata.create_all()`` (a stream's
``baseline``).

Many applications created their first tables with ``create_all()`` and stamped, so their
first revisions are empty or assume those tables exist: such a history cannot build a schema
from nothing. With ``baseline = "REV"`` a new (empty) schema is built as Alembic's cookbook
builds a new database, inside the schema's migration transaction: ``create_all`` of the
models' own tables (with their types and sequences; tables of other schemas are references),
then the version row at REV; the revisions after REV are then applied as usual. Flyway calls
REV the baseline version. ``"head"`` is the stream's head: new schemas are built from the
models as they are now.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .. import catalog, records, versions
from ..errors import ConfigError, MigrationFailed
from ..streams import Stream

Heads = tuple[str, ...]


def revision(stream: Stream) -> str | None:
    """The baseline revision id (``head`` resolved), or None when the stream has none."""
    name = stream.config.baseline
    if name is None:
        return None
    if name in ("head", "heads"):
        heads = stream.script.get_heads()
        if len(heads) != 1:
            raise ConfigError(
                f"stream {stream.name!r}: baseline 'head' needs one head, found"
                f" {', '.join(sorted(heads)) or 'none'}"
            )
        return heads[0]
    found = stream.script.get_revision(name)  # an unknown id raises Alembic's error
    if found is None:
        raise ConfigError(f"stream {stream.name!r}: baseline {name!r} is not a revision")
    return found.revision


def build_new(conn: Connection, stream: Stream, schema: str, target: str) -> Heads:
    """Build ``schema`` at the baseline when it is new (empty, no version row): the models'
    tables, types and sequences, and the version row. Returns the heads it is at then; ()
    when the stream has no baseline or the schema is not new. Runs in the schema's
    transaction (search_path pinned to it)."""
    rev = revision(stream)
    if rev is None or not catalog.is_empty_schema(conn, schema, stream.version_table):
        return ()
    _refuse_target_before(stream, rev, target)
    models = stream.baseline_metadata
    own = [t for t in models.sorted_tables if t.schema is None or t.schema == stream.schema]
    models.create_all(conn, tables=own, checkfirst=True)
    table = versions.version_table(stream.version_table)
    conn.execute(sa.schema.CreateTable(table, if_not_exists=True))
    conn.execute(table.insert().values(version_num=rev))
    records.sync_applied(conn, stream.script, stream.name, schema, (rev,))
    return (rev,)


def _refuse_target_before(stream: Stream, rev: str, target: str) -> None:
    """A new schema starts at the baseline: a target before it cannot be reached."""
    try:
        wanted = versions.resolve(stream.script, target)
    except Exception:  # relative or unknown: Alembic says what is wrong with it
        return
    for head in wanted:
        ancestors = {s.revision for s in stream.script.revision_map.iterate_revisions(head, "base")}
        if rev not in ancestors:
            raise MigrationFailed(
                f"a new schema starts at the baseline {rev} (stream {stream.name!r} builds new"
                f" schemas from its models there): it cannot be upgraded to {head}, before it"
            )
