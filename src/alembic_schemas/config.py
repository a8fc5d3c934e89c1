"""Read ``[tool.alembic-schemas]`` (pyproject.toml) or ``alembic-schemas.toml`` into a Project.

All validation of configuration happens here, so that every later step can trust it.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from sqlalchemy.engine import URL, Engine

from . import identifiers
from .errors import ConfigError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

URL_ENV = "ALEMBIC_SCHEMAS_URL"
PYPROJECT = "pyproject.toml"
OWN_FILE = "alembic-schemas.toml"
SECTION = "alembic-schemas"

EMBEDDED = "embedded"
"""The ``url`` that asks for an embedded PostgreSQL kept under ``.alembic-schemas/``."""
HOW_TO_CHOOSE = (
    f'set url to a PostgreSQL URL (url = "postgresql://user@host/db" or "${{DATABASE_URL}}"), '
    f'or url = "{EMBEDDED}" for a local embedded server, or set ${URL_ENV}'
)
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_STREAM_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_DURATION = re.compile(r"^\d+(\.\d+)?\s*(us|ms|s|min|h|d)?$")

_TOP_KEYS = {
    "url": str,
    "direct_url": str,
    "script_location": str,
    "lock_timeout": str,
    "statement_timeout": str,
    "lock_retries": int,
    "version_table": str,
    "jobs": int,
    "streams": dict,
}
_STREAM_KEYS: dict[str, type | tuple[type, ...]] = {
    "schema": str,
    "tenants": str,
    "metadata": str,
    "depends_on": list,
    "owner": str,
    "version_table": str,
    "grants": (list, dict),
    "register": str,
    "commit_before_autocommit_block": bool,
    "baseline": str,
    "baseline_metadata": str,
    "reference_tables": (bool, list),
}

# Privileges a stream's `grants` may give on tables: a fixed allow-list, so configured text is
# never formatted into SQL. A plain list of roles gets the DML ones.
TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
DEFAULT_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE")

Grants = tuple[tuple[str, tuple[str, ...]], ...]


@dataclass(frozen=True)
class StreamConfig:
    """One ``[streams.NAME]`` table, validated."""

    name: str
    schema: str | None = None
    tenants: str | None = None
    metadata: str | None = None
    depends_on: tuple[str, ...] = ()
    owner: str | None = None
    version_table: str = "alembic_version"
    grants: Grants = ()  # (role, table privileges), validated
    register: str | None = None  # SQL run when `tenants create` adds a tenant; binds :name
    # Run revisions that write before their autocommit_block as Alembic does: commit those
    # statements first (the revision is recorded as partially applied until it completes).
    commit_before_autocommit_block: bool = False
    # The revision at which a new (empty) schema is built from metadata and stamped.
    baseline: str | None = None
    baseline_metadata: str | None = None  # module:attr; default: the stream's metadata
    # Citus: tables of this (named) schema made reference tables after each migration, so
    # that tenant tables may reference them. True: every table but the version table.
    reference_tables: bool | tuple[str, ...] = False

    @property
    def is_tenant(self) -> bool:
        return self.tenants is not None


@dataclass(frozen=True)
class Project:
    """A loaded configuration: where it lives, how to connect, and its streams in dependency order."""

    root: Path
    config_path: Path
    url: str | None
    """The database as configured, not yet resolved (see :func:`database.resolve_url`): a URL
    (which may hold ``${VAR}``), :data:`EMBEDDED`, or None when nothing names one."""
    script_location: Path
    lock_timeout: str = "5s"
    statement_timeout: str = "0"
    lock_retries: int = 3
    jobs: int | None = None
    streams: dict[str, StreamConfig] = field(default_factory=dict)
    url_source: str = "url"
    """Where ``url`` came from, for error messages: ``$ALEMBIC_SCHEMAS_URL`` or the config key."""
    x_arguments: tuple[str, ...] = ()
    """``-x key=value`` arguments for env.py (``context.get_x_argument()``), as Alembic's."""
    direct_url: str | None = None
    """A connection that bypasses a transaction-pooling connection pooler in front of ``url``:
    used for the steps that need one session across transactions."""

    def stream(self, name: str) -> StreamConfig:
        try:
            return self.streams[name]
        except KeyError:
            known = ", ".join(self.streams) or "none"
            raise ConfigError(f"unknown stream {name!r} (configured: {known})") from None

    def select(self, names: Sequence[str] | None) -> list[StreamConfig]:
        """The named streams (all when empty), in dependency order."""
        if not names:
            return list(self.streams.values())
        wanted = {self.stream(n).name for n in names}
        return [s for s in self.streams.values() if s.name in wanted]


ConfigArg = Project | str | os.PathLike[str] | None
"""What every API function takes as ``config``: a loaded Project, a path to a config file or
its folder, or None to search upward from the working directory."""


DatabaseArg: TypeAlias = "str | URL | Engine | AsyncEngine | None"
"""What every API function that connects takes as ``database``: a URL (any form ``url``
accepts, ``${VAR}`` and ``"embedded"`` included) or an Engine / AsyncEngine, whose URL is
used. It wins over ``$ALEMBIC_SCHEMAS_URL`` and the config's ``url``."""


def load(
    config: ConfigArg = None, database: DatabaseArg = None, x_arguments: Sequence[str] = ()
) -> Project:
    """``config`` as a Project (loaded when given as a path or None), on ``database`` if given,
    with ``x_arguments`` (``"key=value"``) for env.py."""
    project = config if isinstance(config, Project) else load_project(config)
    if x_arguments:
        project = dataclasses.replace(project, x_arguments=(*project.x_arguments, *x_arguments))
    if database is None:
        return project
    if isinstance(database, str):
        url = database
    else:
        # An Engine's URL, password included: the tool opens its own connections (it pins
        # session settings that must not leak into the application's pool).
        found = database if isinstance(database, URL) else database.url
        url = found.render_as_string(hide_password=False)
    # The given database for every connection: a direct_url names the configured one.
    return dataclasses.replace(
        project, url=url, url_source="the database argument", direct_url=None
    )


def find_config(start: Path | None = None) -> Path:
    """Walk up from ``start`` (default: the working directory) to the first config file."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        own = folder / OWN_FILE
        if own.is_file():
            return own
        py = folder / PYPROJECT
        if py.is_file() and _section(_read_toml(py), py) is not None:
            return py
    raise ConfigError(
        f"no alembic-schemas configuration found in {here} or its parents "
        f"(add [tool.{SECTION}] to pyproject.toml, or run 'alembic-schemas init')"
    )


def load_project(path: str | os.PathLike[str] | None = None) -> Project:
    """Load a Project from a config file, a folder holding one, or by walking up from the cwd."""
    if path is None:
        config_path = find_config()
    else:
        p = Path(path).resolve()
        if p.is_dir():
            config_path = find_config(p)
        elif p.is_file():
            config_path = p
        else:
            raise ConfigError(f"config file not found: {path}")
    data = _section(_read_toml(config_path), config_path)
    if data is None:
        raise ConfigError(f"{config_path}: no [tool.{SECTION}] section")
    return _build(config_path, data)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: malformed TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None


def _section(doc: dict[str, Any], path: Path) -> dict[str, Any] | None:
    if path.name == PYPROJECT or SECTION in doc.get("tool", {}):
        found = doc.get("tool", {}).get(SECTION)
        if found is not None and not isinstance(found, dict):
            raise ConfigError(f"{path}: [tool.{SECTION}] must be a table")
        return found
    return doc


def _check_keys(
    where: str, data: Mapping[str, Any], allowed: Mapping[str, type | tuple[type, ...]]
) -> None:
    for key, value in data.items():
        if key not in allowed:
            raise ConfigError(
                f"{where}: unknown key {key!r} (allowed: {', '.join(sorted(allowed))})"
            )
        expected = allowed[key]
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            names = expected if isinstance(expected, tuple) else (expected,)
            wanted = " or ".join(t.__name__ for t in names)
            raise ConfigError(f"{where}: {key!r} must be {wanted}, not {type(value).__name__}")


def _grants(where: str, raw: list[Any] | dict[str, Any]) -> Grants:
    """``["app"]`` (DML privileges) or ``{ app = ["SELECT", ...] }``: roles validated as
    identifiers, privileges checked against TABLE_PRIVILEGES."""
    pairs = raw.items() if isinstance(raw, dict) else ((r, list(DEFAULT_PRIVILEGES)) for r in raw)
    out: list[tuple[str, tuple[str, ...]]] = []
    for role, privs in pairs:
        if not isinstance(role, str):
            raise ConfigError(f"{where}: grants must list role names, not {type(role).__name__}")
        identifiers.validate_role(role, "grant role")
        if not isinstance(privs, list) or not privs or not all(isinstance(p, str) for p in privs):
            raise ConfigError(f"{where}: grants.{role} must be a non-empty list of privileges")
        wanted = tuple(dict.fromkeys(p.strip().upper() for p in privs))
        bad = [p for p in wanted if p not in TABLE_PRIVILEGES]
        if bad:
            raise ConfigError(
                f"{where}: grants.{role}: unknown privilege {bad[0]!r} "
                f"(allowed: {', '.join(TABLE_PRIVILEGES)})"
            )
        out.append((role, wanted))
    return tuple(out)


def _reference_tables(
    where: str, raw: bool | list[Any], schema: str | None
) -> bool | tuple[str, ...]:
    """``reference_tables``: true, false, or a list of table names; named streams only (a
    table inside a tenant's distributed schema cannot become a reference table)."""
    if raw is False:
        return False
    if schema is None:
        raise ConfigError(f"{where}: reference_tables applies to streams with a 'schema' only")
    if raw is True:
        return True
    try:
        return tuple(identifiers.validate_object(t, "reference table name") for t in raw)
    except identifiers.InvalidIdentifier as exc:
        raise identifiers.InvalidIdentifier(f"{where}: {exc}") from None


def _version_table(where: str, name: object) -> str:
    """A version table name whose primary key, Alembic's ``<name>_pkc``, fits in 63 bytes too:
    the server would truncate that name, and at 63 bytes into the table's own name."""
    checked = identifiers.validate(name, "version table name")
    size, most = len(checked.encode("utf-8")), identifiers.MAX_BYTES - len("_pkc")
    if size > most:
        raise identifiers.InvalidIdentifier(
            f"{where}: invalid version table name {checked!r}: {size} bytes, at most {most} "
            "(its primary key is named '<name>_pkc')"
        )
    return checked


_NAME_PARAMETER = re.compile(r"(?<![:\w]):name\b")


def _check_register(where: str, sql: str, tenants: object) -> None:
    """SQL that registers a new tenant with its source: bound :name, tenant streams only."""
    if tenants is None:
        raise ConfigError(f"{where}: 'register' is only for tenant streams")
    if not _NAME_PARAMETER.search(sql):
        raise ConfigError(
            f"{where}: register must use the bound parameter :name for the tenant, e.g. "
            "INSERT INTO shared.tenant (schema_name) VALUES (:name)"
        )


def _baseline(where: str, raw: Mapping[str, Any]) -> str | None:
    baseline = raw.get("baseline")
    if baseline is not None and not baseline.strip():
        raise ConfigError(f"{where}: 'baseline' must name a revision (or 'head')")
    if raw.get("baseline_metadata") is not None and baseline is None:
        raise ConfigError(f"{where}: 'baseline_metadata' needs 'baseline'")
    if baseline is not None and raw.get("metadata") is None and "baseline_metadata" not in raw:
        raise ConfigError(f"{where}: 'baseline' needs 'metadata' (or 'baseline_metadata')")
    return baseline.strip() if baseline is not None else None


def _duration(where: str, key: str, value: str) -> str:
    if not _DURATION.match(value.strip()):
        raise ConfigError(f"{where}: {key} {value!r} is not a duration like '5s', '500ms' or '0'")
    return value.strip()


def _build(config_path: Path, data: dict[str, Any]) -> Project:
    where = str(config_path)
    _check_keys(where, data, _TOP_KEYS)
    root = config_path.parent
    raw_streams = data.get("streams", {})
    default_vt = data.get("version_table", "alembic_version")
    streams: dict[str, StreamConfig] = {}
    for name, raw in raw_streams.items():
        swhere = f"{where}: stream {name!r}"
        if not _STREAM_NAME.fullmatch(name):  # match() let 'core\n' through ($ before \n)
            raise ConfigError(f"{swhere}: stream names may use letters, digits, '_', '-', '.'")
        if not isinstance(raw, dict):
            raise ConfigError(f"{swhere}: must be a table")
        _check_keys(swhere, raw, _STREAM_KEYS)
        schema, tenants = raw.get("schema"), raw.get("tenants")
        if (schema is None) == (tenants is None):
            raise ConfigError(f"{swhere}: set exactly one of 'schema' or 'tenants'")
        owner = raw.get("owner")
        try:
            if schema is not None:
                identifiers.validate(schema, "schema name")
                if identifiers.is_reserved_schema(schema):
                    raise identifiers.InvalidIdentifier(
                        f"invalid schema name {schema!r}: reserved for PostgreSQL or alembic-schemas"
                    )
            if owner is not None:
                identifiers.validate_role(owner, "owner role")
            grants = _grants(swhere, raw.get("grants", []))
        except identifiers.InvalidIdentifier as exc:
            raise identifiers.InvalidIdentifier(f"{swhere}: {exc}") from None
        references = _reference_tables(swhere, raw.get("reference_tables", False), schema)
        depends = raw.get("depends_on", [])
        if not all(isinstance(d, str) for d in depends):
            raise ConfigError(f"{swhere}: depends_on must be a list of stream names")
        register = raw.get("register")
        if register is not None:
            _check_register(swhere, register, tenants)
        streams[name] = StreamConfig(
            name=name,
            schema=schema,
            tenants=tenants,
            metadata=raw.get("metadata"),
            depends_on=tuple(depends),
            owner=owner,
            grants=grants,
            reference_tables=references,
            version_table=_version_table(swhere, raw.get("version_table", default_vt)),
            register=register,
            commit_before_autocommit_block=raw.get("commit_before_autocommit_block", False),
            baseline=_baseline(swhere, raw),
            baseline_metadata=raw.get("baseline_metadata"),
        )
    schemas_seen: dict[str, str] = {}
    for s in streams.values():
        if s.schema is not None:
            if s.schema in schemas_seen:
                raise ConfigError(
                    f"{where}: streams {schemas_seen[s.schema]!r} and {s.name!r} "
                    f"both target schema {s.schema!r}"
                )
            schemas_seen[s.schema] = s.name
    url, url_source = configured_url(data.get("url"), f"url in {where}")
    return Project(
        root=root,
        config_path=config_path,
        url=url,
        url_source=url_source,
        direct_url=data.get("direct_url"),
        script_location=(root / data.get("script_location", "migrations")).resolve(),
        lock_timeout=_duration(where, "lock_timeout", data.get("lock_timeout", "5s")),
        statement_timeout=_duration(where, "statement_timeout", data.get("statement_timeout", "0")),
        lock_retries=data.get("lock_retries", 3),
        jobs=data.get("jobs"),
        streams=_in_dependency_order(where, streams),
    )


def configured_url(url: str | None, source: str) -> tuple[str | None, str]:
    """``(url, where it came from)``: ``$ALEMBIC_SCHEMAS_URL`` whenever it is set, even empty
    (a CI secret that did not resolve must fail, not fall back to another database), else
    the config's ``url``. Nothing is expanded or checked yet: commands that need no database
    (``history``, ``--sql``) work without one."""
    if URL_ENV in os.environ:
        return os.environ[URL_ENV], f"${URL_ENV}"
    return url, source


def expand(url: str, source: str) -> str:
    """``url`` with every ``${VAR}`` replaced by that environment variable; an unset or empty
    variable, or an empty result, is a ConfigError naming it."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        found = os.environ.get(name)
        if found is None:
            raise ConfigError(
                f"{source} names ${{{name}}}, but environment variable {name} is not set"
            )
        if not found.strip():
            raise ConfigError(
                f"{source} names ${{{name}}}, but environment variable {name} is empty"
            )
        return found

    expanded = _VARIABLE.sub(value, url).strip()
    if not expanded:
        if source.startswith("$"):
            raise ConfigError(
                f"environment variable {source[1:]} is set but empty: set it to a database URL "
                f"(or {EMBEDDED!r}), or unset it to use the config's url"
            )
        raise ConfigError(f"{source} is empty: {HOW_TO_CHOOSE}")
    return expanded


def _in_dependency_order(where: str, streams: dict[str, StreamConfig]) -> dict[str, StreamConfig]:
    """Topological order (config order among independent streams); unknown deps and cycles fail."""
    for s in streams.values():
        for dep in s.depends_on:
            if dep not in streams:
                raise ConfigError(f"{where}: stream {s.name!r} depends on unknown stream {dep!r}")
    ordered: dict[str, StreamConfig] = {}
    visiting: list[str] = []

    def visit(name: str) -> None:
        if name in ordered:
            return
        if name in visiting:
            cycle = " -> ".join([*visiting[visiting.index(name) :], name])
            raise ConfigError(f"{where}: depends_on cycle: {cycle}")
        visiting.append(name)
        for dep in streams[name].depends_on:
            visit(dep)
        visiting.pop()
        ordered[name] = streams[name]

    for name in streams:
        visit(name)
    return ordered
