"""Which database a command migrates: always an explicit choice. ``url = "embedded"`` asks for
the embedded server; no URL, an empty or unset variable is an error naming what to set; URLs
of other drivers are migrated through psycopg 3; the API takes a URL or an Engine."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

import alembic_schemas
from alembic_schemas import database
from alembic_schemas.errors import ConfigError

from helpers import run_cli_own_url as run_cli

SEED = Path(__file__).resolve().parent.parent / "examples" / "seed"
NOWHERE = "postgresql+psycopg://nobody@127.0.0.1:9/nowhere"
HEADS = {"myschema": "0002_myschema_marks", "schema1": "0001_schema1_init"}


@pytest.fixture
def seed(tmp_path: Path) -> Iterator[Path]:
    """A copy of the seed example; ``url`` as the test writes it (the example's is embedded)."""
    root = tmp_path / "seed"
    shutil.copytree(SEED, root, ignore=shutil.ignore_patterns("__pycache__", ".alembic-schemas"))
    yield root
    assert not (root / ".alembic-schemas").exists(), "an embedded server was started"


def _set_url(root: Path, url: str | None) -> None:
    path = root / "pyproject.toml"
    text = re.sub(r"(?m)^url = .*\n", "", path.read_text())
    if url is not None:
        text = text.replace("[tool.alembic-schemas]\n", f"[tool.alembic-schemas]\nurl = {url!r}\n")
    path.write_text(text)


def _one_error(proc: subprocess.CompletedProcess[str], code: int = 2) -> str:
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0].removeprefix("alembic-schemas: error: ")


def _heads(engine: sa.Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return {
            s: conn.scalar(sa.text(f'SELECT version_num FROM "{s}".alembic_version')) for s in HEADS
        }


def test_a_config_without_a_url_is_an_error_saying_how_to_choose(seed: Path) -> None:
    _set_url(seed, None)
    message = _one_error(run_cli(seed, "upgrade"))
    assert message == (
        f"no database configured in {seed / 'pyproject.toml'}: set url to a PostgreSQL URL "
        '(url = "postgresql://user@host/db" or "${DATABASE_URL}"), or url = "embedded" for a '
        "local embedded server, or set $ALEMBIC_SCHEMAS_URL"
    )
    # Commands that need no database still work.
    assert run_cli(seed, "history", "-s", "myschema").returncode == 0


def test_an_empty_url_variable_is_an_error_naming_it(seed: Path) -> None:
    # `url = "embedded"` stays in the config: an empty override must not fall back to it.
    message = _one_error(run_cli(seed, "upgrade", ALEMBIC_SCHEMAS_URL=""))
    assert message.startswith("environment variable ALEMBIC_SCHEMAS_URL is set but empty")


def test_url_variables_are_expanded_and_an_unset_or_empty_one_is_named(
    seed: Path, db_url: str, db: sa.Engine
) -> None:
    url = make_url(db_url)
    _set_url(
        seed,
        "postgresql://${SEED_USER}@"
        + str(url.host or "")
        + "/${SEED_DB}?"
        + "&".join(f"{k}={v}" for k, v in url.query.items()),
    )
    where = f"url in {seed / 'pyproject.toml'}"
    missing = _one_error(run_cli(seed, "current", SEED_DB=url.database, SEED_USER=None))
    assert missing == f"{where} names ${{SEED_USER}}, but environment variable SEED_USER is not set"
    empty = _one_error(run_cli(seed, "current", SEED_DB=url.database, SEED_USER=""))
    assert empty == f"{where} names ${{SEED_USER}}, but environment variable SEED_USER is empty"

    done = run_cli(seed, "upgrade", SEED_DB=url.database, SEED_USER=url.username)
    assert done.returncode == 0, done.stderr
    assert _heads(db) == HEADS


@pytest.mark.parametrize(
    "driver", ["postgres", "postgresql", "postgresql+asyncpg", "postgresql+psycopg2"]
)
def test_postgres_asyncpg_and_psycopg2_urls_are_migrated_through_psycopg(
    seed: Path, db_url: str, db: sa.Engine, driver: str
) -> None:
    url = make_url(db_url).set(drivername=driver)
    if driver.endswith("asyncpg"):  # asyncpg's spelling of libpq's sslmode
        url = url.update_query_dict({"ssl": "disable", "prepared_statement_cache_size": "0"})
    _set_url(seed, url.render_as_string(hide_password=False))
    done = run_cli(seed, "upgrade")
    assert done.returncode == 0, done.stderr
    assert _heads(db) == HEADS


def test_a_driver_other_than_psycopg_asyncpg_or_psycopg2_is_refused(seed: Path) -> None:
    _set_url(seed, "postgresql+pg8000://app@localhost/app")
    message = _one_error(run_cli(seed, "current"))
    assert "driver 'pg8000' is not supported; alembic-schemas migrates through psycopg 3" in message
    _set_url(seed, "mysql://app@localhost/app")
    assert "database URL must be PostgreSQL, got 'mysql'" in _one_error(run_cli(seed, "current"))


def test_the_api_takes_a_url_or_an_engine_over_the_config_and_the_variable(
    seed: Path, db_url: str, db: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    _set_url(seed, None)
    monkeypatch.setenv("ALEMBIC_SCHEMAS_URL", NOWHERE)  # the argument wins over it
    report = alembic_schemas.upgrade(streams=["myschema"], database=db_url, config=seed)
    assert [(r.stream, r.after) for r in report] == [("myschema", (HEADS["myschema"],))]

    app = sa.create_engine(make_url(db_url).set(drivername="postgresql+psycopg"))
    try:
        alembic_schemas.upgrade(database=app, config=seed)
        states = alembic_schemas.current(database=app, config=seed)
        assert {s.schema: s.current for s in states} == {k: (v,) for k, v in HEADS.items()}
        assert alembic_schemas.check(database=app, config=seed)[0].clean
        assert alembic_schemas.tenants is not None
    finally:
        app.dispose()
    with pytest.raises(ConfigError, match="no database configured"):
        monkeypatch.delenv("ALEMBIC_SCHEMAS_URL")
        alembic_schemas.current(config=seed)


def test_sql_output_never_starts_a_server(seed: Path) -> None:
    for url in ("embedded", None):
        _set_url(seed, url)
        done = run_cli(seed, "upgrade", "--sql")
        assert done.returncode == 0, done.stderr
        assert 'CREATE SCHEMA IF NOT EXISTS "myschema"' in done.stdout


@pytest.mark.parametrize(
    "args",
    [
        ("upgrade", "-s", "nope"),
        ("current", "-s", "nope"),
        ("status", "-s", "nope"),
        ("check", "-s", "nope"),
        ("stamp", "-s", "nope", "head"),
        ("downgrade", "-s", "nope", "-1"),
        ("upgrade", "--tenant", "pg_x"),
    ],
)
def test_a_misspelt_stream_or_bad_tenant_is_refused_before_any_server_starts(
    seed: Path, args: tuple[str, ...]
) -> None:
    message = _one_error(run_cli(seed, *args))
    assert "unknown stream 'nope'" in message or "invalid tenant name 'pg_x'" in message


def test_urls_are_normalised_to_psycopg() -> None:
    asyncpg = database.normalise("postgresql+asyncpg://u:p@h/d?ssl=true&command_timeout=5")
    assert (
        asyncpg.render_as_string(hide_password=False)
        == "postgresql+psycopg://u:p@h/d?sslmode=require"
    )
    assert database.normalise("postgres://h/d").drivername == "postgresql+psycopg"
