"""Writing starter configuration and stream script directories; never overwrites anything."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from . import identifiers
from .config import OWN_FILE, PYPROJECT, SECTION, Project, load_project
from .errors import ConfigError

TEMPLATE_FILES = ("env.py", "script.py.mako", "alembic.ini")

STARTER = f"""
[tool.{SECTION}]
# Database: "embedded" is a local PostgreSQL kept under .alembic-schemas/ beside this file;
# for a real server write its URL or the variable holding it: "${{DATABASE_URL}}",
# "postgresql://app@localhost/app" (asyncpg and psycopg2 URLs are accepted too).
# $ALEMBIC_SCHEMAS_URL, when set, overrides this.
url = "embedded"
script_location = "migrations"
# lock_timeout = "5s"        # per statement; lock timeouts are retried with back-off
# statement_timeout = "0"
#
# One stream per schema ("alembic-schemas add-stream NAME --schema S --metadata MOD:ATTR"):
# [tool.{SECTION}.streams.myschema]
# schema = "myschema"
# metadata = "app.models:metadata"
#
# A tenant stream, applied to every schema its source lists:
# [tool.{SECTION}.streams.tenant]
# tenants = "like:tenant_%"          # or "query:SELECT ...", or "callable:app.t:names"
# metadata = "app.tenant_models:metadata"
# depends_on = ["myschema"]
"""


def _toml_str(value: str) -> str:
    # A JSON string is a TOML basic string, except that TOML also refuses a raw DEL.
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def write_starter(directory: Path) -> Path:
    """Add a commented starter section to ``pyproject.toml`` (or create alembic-schemas.toml)."""
    py = directory / PYPROJECT
    if py.is_file():
        with py.open("a", encoding="utf-8") as f:
            f.write(STARTER)
        return py
    own = directory / OWN_FILE
    own.write_text(STARTER.replace(f"[tool.{SECTION}]\n", "").lstrip(), encoding="utf-8")
    return own


def stream_files(project: Project, name: str) -> list[Path]:
    """Create whatever is missing of ``migrations/<name>/``; returns the paths created."""
    folder = project.script_location / name
    created: list[Path] = []
    for sub in (folder, folder / "versions"):
        if not sub.is_dir():
            sub.mkdir(parents=True)
            created.append(sub)
    templates = resources.files("alembic_schemas") / "templates" / "stream"
    for filename in TEMPLATE_FILES:
        target = folder / filename
        if not target.exists():
            target.write_text((templates / filename).read_text(encoding="utf-8"), encoding="utf-8")
            created.append(target)
    return created


def append_stream(
    project: Project,
    name: str,
    *,
    schema: str | None,
    tenants: str | None,
    metadata: str | None,
    depends_on: tuple[str, ...] = (),
    owner: str | None = None,
) -> Project:
    """Append a ``[streams.NAME]`` table to the config file; returns the reloaded project."""
    if name in project.streams:
        raise ConfigError(f"stream {name!r} already exists in {project.config_path}")
    try:  # before the file is touched, naming the name (also one that is not UTF-8)
        if schema is not None:
            identifiers.validate(schema, "schema name")
        if owner is not None:
            identifiers.validate_role(owner, "owner role")
    except identifiers.InvalidIdentifier as exc:
        raise identifiers.InvalidIdentifier(f"stream {name!r}: {exc}") from None
    prefix = f"tool.{SECTION}." if project.config_path.name != OWN_FILE else ""
    lines = ["", f"[{prefix}streams.{_toml_key(name)}]"]
    for key, value in (
        ("schema", schema),
        ("tenants", tenants),
        ("metadata", metadata),
        ("owner", owner),
    ):
        if value is not None:
            lines.append(f"{key} = {_toml_str(value)}")
    if depends_on:
        lines.append("depends_on = [" + ", ".join(_toml_str(d) for d in depends_on) + "]")
    original = project.config_path.read_text(encoding="utf-8")
    try:
        # Encode first: write_text truncated the file, then failed on undecodable
        # command-line bytes (lone surrogates), leaving an empty pyproject.toml.
        updated = (original.rstrip("\n") + "\n" + "\n".join(lines) + "\n").encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(f"stream {name!r}: names and values must be valid UTF-8") from None
    project.config_path.write_bytes(updated)
    try:
        return load_project(project.config_path)
    except ConfigError:
        project.config_path.write_text(original, encoding="utf-8")  # leave the file as it was
        raise


def _toml_key(name: str) -> str:
    bare = name.replace("_", "").replace("-", "")
    return name if bare.isascii() and bare.isalnum() else _toml_str(name)
