"""The ``alembic-schemas`` command line: a thin click layer over :mod:`alembic_schemas.command`."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import click
import sqlalchemy as sa
from alembic.script import Script

from . import adopt as adoption
from . import command, database, embedded, summary, tenants
from .config import load
from .errors import (
    AlembicSchemasError,
    CheckFailed,
    ConfigError,
    Interrupted,
    MigrationFailed,
    describe_python_error,
)
from .progress import ReadProgress, RunProgress
from .results import SchemaResult, SchemaState, UpgradeReport

log = logging.getLogger("alembic_schemas")


class _Group(click.Group):
    """Prints user errors as one line (exit 2 for usage/config, 1 for runtime)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AlembicSchemasError as exc:
            verbose = bool(ctx.obj and ctx.obj.get("verbose"))
            if verbose:
                traceback.print_exc()
            click.echo(f"alembic-schemas: error: {exc}", err=True)
            statement = getattr(exc, "statement", None)
            if verbose and statement:
                click.echo(f"alembic-schemas: failing statement:\n{statement}", err=True)
            ctx.exit(exc.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:
            if ctx.obj and ctx.obj.get("verbose"):
                traceback.print_exc()
            click.echo(f"alembic-schemas: error: {_unexpected(exc)}", err=True)
            ctx.exit(1)


def _unexpected(exc: Exception) -> str:
    """One line for an error we did not word ourselves, e.g. raised by a migration script
    or env.py: the database's message, or the exception and where it was raised."""
    if isinstance(exc, sa.exc.DBAPIError):
        return database.describe(exc)
    return describe_python_error(exc)


def _setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("alembic-schemas: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
    if verbose:
        alembic_log = logging.getLogger("alembic")
        alembic_log.handlers[:] = [logging.StreamHandler(sys.stderr)]
        alembic_log.setLevel(logging.INFO)


stream_opt = click.option(
    "-s", "--stream", "streams", multiple=True, help="Stream name (repeatable; default: all)."
)
tenant_opt = click.option(
    "--tenant", "tenants", multiple=True, help="Tenant schema (repeatable; default: every tenant)."
)
json_opt = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
all_opt = click.option(
    "--all",
    "all_schemas",
    is_flag=True,
    help="List every schema, not only those needing attention.",
)


def _collect_x(ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> None:
    for value in values:
        if "=" not in value:
            raise click.BadParameter(f"{value!r} must look like key=value", ctx, _param)
    ctx.find_root().ensure_object(dict).setdefault("x", []).extend(values)


# As Alembic's `-x`: before the command (`alembic-schemas -x k=v upgrade`) or after it.
x_opt = click.option(
    "-x",
    "x_arguments",
    multiple=True,
    expose_value=False,
    callback=_collect_x,
    metavar="KEY=VALUE",
    help="Argument for env.py (context.get_x_argument()), as Alembic's -x; repeatable.",
)


def _cfg(ctx: click.Context) -> Any:
    """The ``config`` argument: the -c path, or with -x arguments a loaded Project carrying them."""
    root = ctx.find_root().obj
    if root.get("x"):
        return load(root["config"], x_arguments=root["x"])
    return root["config"]


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


_revs = summary.revs


def _echo_lines(lines: Sequence[str]) -> None:
    for line in lines:
        click.echo(line)


def _script_line(sc: Script, verbose: bool = False) -> str:
    return sc.cmd_format(
        verbose, include_branches=True, include_doc=True, include_parents=True, tree_indicators=True
    )


def _script_dict(sc: Script) -> dict[str, Any]:
    down = sc.down_revision
    return {
        "revision": sc.revision,
        "down_revision": list(down) if isinstance(down, tuple) else ([down] if down else []),
        "message": sc.doc,
        "is_head": sc.is_head,
        "path": sc.path,
    }


def _verbose() -> bool:
    root = click.get_current_context().find_root()
    return bool(root.obj and root.obj.get("verbose"))


def _report(results: Sequence[SchemaResult], as_json: bool) -> None:
    if as_json:
        _print_json([r.as_dict() for r in results])
        return
    _echo_lines([x for r in results for x in summary.result_lines(r, _verbose())])


@contextlib.contextmanager
def _graceful_interrupt(progress: RunProgress) -> Iterator[command.Interrupt]:
    """Ctrl-C during a run: no new schema starts, those in flight finish (or roll back),
    then the summary and exit 130. A second Ctrl-C abandons those in flight: the process
    exits at once and their transactions roll back."""
    interrupt = command.Interrupt()
    if threading.current_thread() is not threading.main_thread():
        yield interrupt
        return

    def on_sigint(_signum: int, _frame: Any) -> None:
        if interrupt.stopped:
            progress.note("abandoning the schemas in flight: their transactions roll back")
            os._exit(130)
        interrupt.stop()
        progress.note(
            "stopping: no new schema starts; waiting for those in flight to finish "
            "(Ctrl-C again to abandon them)"
        )

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield interrupt
    finally:
        signal.signal(signal.SIGINT, previous)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-c",
    "--config",
    type=click.Path(dir_okay=True, path_type=Path),
    default=None,
    help="Config file (pyproject.toml or alembic-schemas.toml) or its folder.",
)
@click.option("-v", "--verbose", is_flag=True, help="Show Alembic's log and tracebacks.")
@x_opt
@click.version_option(package_name="alembic-schemas")
@click.pass_context
def cli(ctx: click.Context, config: Path | None, verbose: bool) -> None:
    """PostgreSQL schema-level migrations on Alembic: named-schema streams and tenants."""
    ctx.ensure_object(dict)
    ctx.obj["config"] = config
    ctx.obj["verbose"] = verbose
    _setup_logging(verbose)


@cli.command()
@click.argument("directory", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.pass_context
def init(ctx: click.Context, directory: Path | None) -> None:
    """Write a starter config if none exists and any missing stream folders; never overwrites."""
    result = command.init(directory or ctx.obj["config"])
    if result.wrote_config:
        click.echo(f"wrote starter configuration to {result.config_path}")
    for path in result.created:
        click.echo(f"created {path}")
    if not result.created and not result.wrote_config:
        click.echo("nothing to create")


@cli.command("add-stream")
@click.argument("name")
@click.option("--schema", help="Schema this stream targets.")
@click.option("--tenants", help="Tenant source: query:SQL, like:PATTERN or callable:mod:func.")
@click.option("--metadata", help="Models as module:attr, e.g. app.models:Base.metadata.")
@click.option("--depends-on", multiple=True, help="Stream this one runs after (repeatable).")
@click.option("--owner", help="Role owning the schema (CREATE SCHEMA ... AUTHORIZATION).")
@click.pass_context
def add_stream(
    ctx: click.Context,
    name: str,
    schema: str | None,
    tenants: str | None,
    metadata: str | None,
    depends_on: tuple[str, ...],
    owner: str | None,
) -> None:
    """Add a stream to the config and create its script directory."""
    created = command.add_stream(
        name,
        schema=schema,
        tenants=tenants,
        metadata=metadata,
        depends_on=depends_on,
        owner=owner,
        config=_cfg(ctx),
    )
    click.echo(f"added stream {name}")
    for path in created:
        click.echo(f"created {path}")


@cli.command()
@x_opt
@click.option("-s", "--stream", required=True, help="Stream to add the revision to.")
@click.option("-m", "--message", help="Revision message.")
@click.option("--autogenerate", is_flag=True, help="Diff the stream's models with its schema.")
@click.option("--rev-id", help="Revision id to use instead of a generated one.")
@click.option("--head", default="head", show_default=True, help="Head to base the revision on.")
@click.option("--splice", is_flag=True, help="Allow a non-head base revision.")
@click.option("--branch-label", help="Branch label for the new revision.")
@click.option("--depends-on", help="Revision(s) this one depends on.")
@click.pass_context
def revision(
    ctx: click.Context,
    stream: str,
    message: str | None,
    autogenerate: bool,
    rev_id: str | None,
    head: str,
    splice: bool,
    branch_label: str | None,
    depends_on: str | None,
) -> None:
    """Create a new revision in a stream."""
    scripts = command.revision(
        stream,
        message,
        autogenerate=autogenerate,
        rev_id=rev_id,
        head=head,
        splice=splice,
        branch_label=branch_label,
        depends_on=depends_on,
        config=_cfg(ctx),
    )
    for sc in scripts:
        click.echo(f"{stream}: created revision {sc.revision}: {sc.path}")


@cli.command()
@x_opt
@stream_opt
@tenant_opt
@click.argument("revision", default="head")
@click.option("--sql", is_flag=True, help="Print the SQL instead of running it.")
@click.option("-j", "--jobs", type=click.IntRange(min=1), help="Parallel workers (default: CPUs).")
@click.option(
    "--max-failures",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Failed schemas tolerated before no new schema starts.",
)
@click.option("--retry-failed", is_flag=True, help="Only the tenants that failed in the last run.")
@click.option("--shard", help="K/N: take a stable 1/N of the tenants (K from 1 to N).")
@json_opt
@click.pass_context
def upgrade(
    ctx: click.Context,
    streams: tuple[str, ...],
    tenants: tuple[str, ...],
    revision: str,
    sql: bool,
    jobs: int | None,
    max_failures: int,
    retry_failed: bool,
    shard: str | None,
    as_json: bool,
) -> None:
    """Upgrade every stream (or -s ...) and every tenant to REVISION (default head)."""
    _run(
        RunProgress(quiet=as_json),
        lambda progress, interrupt: command.upgrade(
            revision,
            streams=streams,
            tenants=tenants,
            sql=sql,
            jobs=jobs,
            max_failures=max_failures,
            retry_failed=retry_failed,
            shard=shard,
            on_plan=progress.plan,
            on_result=progress.result,
            interrupt=interrupt,
            config=_cfg(ctx),
        ),
        as_json=as_json,
        sql=sql,
    )


def _run(
    progress: RunProgress,
    call: Callable[[RunProgress, command.Interrupt], UpgradeReport],
    *,
    as_json: bool,
    sql: bool,
) -> None:
    """An upgrade or downgrade with progress and Ctrl-C handling, then its summary (also
    when it failed or was interrupted, before the one-line error)."""
    with _graceful_interrupt(progress) as interrupt:
        try:
            report = call(progress, interrupt)
        except (MigrationFailed, Interrupted) as exc:
            progress.close()
            partial = getattr(exc, "report", None)
            if isinstance(partial, UpgradeReport):
                _run_summary(partial, as_json)
            raise
    progress.close()
    if not sql:
        _run_summary(report, as_json)


def _run_summary(report: UpgradeReport, as_json: bool) -> None:
    if as_json:
        _print_json(report.as_dict())
        return
    _echo_lines(summary.run_lines(report, verbose=_verbose()))
    how = "interrupted after" if report.interrupted else "done in"
    click.echo(
        f"{how} {report.seconds:.2f}s" + (f" (run {report.run_id})" if report.run_id else "")
    )


@cli.command(context_settings={"ignore_unknown_options": True})
@x_opt
@click.option("-s", "--stream", "streams", multiple=True, required=True, help="Stream(s).")
@tenant_opt
@click.argument("revision")
@click.option("--sql", is_flag=True, help="Print the SQL instead of running it.")
@click.option("-j", "--jobs", type=click.IntRange(min=1), help="Parallel workers (default: CPUs).")
@click.option(
    "--max-failures",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Failed schemas tolerated before no new schema starts.",
)
@json_opt
@click.pass_context
def downgrade(
    ctx: click.Context,
    streams: tuple[str, ...],
    tenants: tuple[str, ...],
    revision: str,
    sql: bool,
    jobs: int | None,
    max_failures: int,
    as_json: bool,
) -> None:
    """Downgrade a stream to REVISION (e.g. -1, base, or an id)."""
    _run(
        RunProgress(quiet=as_json),
        lambda progress, interrupt: command.downgrade(
            revision,
            streams=streams,
            tenants=tenants,
            sql=sql,
            jobs=jobs,
            max_failures=max_failures,
            on_plan=progress.plan,
            on_result=progress.result,
            interrupt=interrupt,
            config=_cfg(ctx),
        ),
        as_json=as_json,
        sql=sql,
    )


@cli.command()
@x_opt
@stream_opt
@tenant_opt
@click.argument("revision")
@click.option("--purge", is_flag=True, help="Delete existing version rows first.")
@json_opt
@click.pass_context
def stamp(
    ctx: click.Context,
    streams: tuple[str, ...],
    tenants: tuple[str, ...],
    revision: str,
    purge: bool,
    as_json: bool,
) -> None:
    """Record REVISION as applied without running migrations."""
    _report(
        command.stamp(revision, streams=streams, tenants=tenants, purge=purge, config=_cfg(ctx)),
        as_json,
    )


@cli.command()
@stream_opt
@tenant_opt
@json_opt
@click.pass_context
def current(
    ctx: click.Context, streams: tuple[str, ...], tenants: tuple[str, ...], as_json: bool
) -> None:
    """Show the applied revision of every schema."""
    states = command.current(streams=streams, tenants=tenants, config=_cfg(ctx))
    if as_json:
        _print_json([s.as_dict() for s in states])
    else:
        _echo_lines([summary.current_line(s) for s in states])
    _fail_on_errors(states)


def _fail_on_errors(states: Sequence[SchemaState]) -> None:
    """Exit 1, after the full report, when some schemas could not be read or compared."""
    failure = summary.read_failure(states)
    if failure:
        raise AlembicSchemasError(failure)


@cli.command()
@click.option("-s", "--stream", "streams", multiple=True, help="Stream(s); default all.")
@click.option("-r", "--rev-range", help="Range like base:head or abc:.")
@click.option("--verbose", "long", is_flag=True, help="Full details per revision.")
@json_opt
@click.pass_context
def history(
    ctx: click.Context, streams: tuple[str, ...], rev_range: str | None, long: bool, as_json: bool
) -> None:
    """List a stream's revisions, newest first."""
    project = load(_cfg(ctx))
    data: dict[str, Any] = {}
    for st in project.select(streams):
        scripts = command.history(st.name, rev_range=rev_range, config=project)
        if as_json:
            data[st.name] = [_script_dict(sc) for sc in scripts]
            continue
        click.echo(f"# {st.name}")
        for sc in scripts:
            click.echo(_script_line(sc, long))
    if as_json:
        _print_json(data)


@cli.command()
@stream_opt
@json_opt
@click.pass_context
def heads(ctx: click.Context, streams: tuple[str, ...], as_json: bool) -> None:
    """Show the head revision(s) of each stream."""
    found = command.heads(streams=streams, config=_cfg(ctx))
    if as_json:
        _print_json({name: [_script_dict(sc) for sc in scs] for name, scs in found.items()})
        return
    for name, scs in found.items():
        for sc in scs:
            click.echo(f"{name}: {_script_line(sc)}")
        if not scs:
            click.echo(f"{name}: no revisions")


@cli.command()
@click.option("-s", "--stream", required=True, help="Stream.")
@click.argument("revision")
@json_opt
@click.pass_context
def show(ctx: click.Context, stream: str, revision: str, as_json: bool) -> None:
    """Show one revision in detail."""
    scripts = command.show(stream, revision, config=_cfg(ctx))
    if as_json:
        _print_json([_script_dict(sc) for sc in scripts])
        return
    for sc in scripts:
        click.echo(sc.log_entry)


@cli.command()
@click.option("-s", "--stream", required=True, help="Stream.")
@click.argument("revisions", nargs=-1)
@click.option("-m", "--message", help="Merge message.")
@click.pass_context
def merge(ctx: click.Context, stream: str, revisions: tuple[str, ...], message: str | None) -> None:
    """Merge REVISIONS (default: all heads) of a stream into one."""
    sc = command.merge(stream, revisions or ("heads",), message=message, config=_cfg(ctx))
    if sc is not None:
        click.echo(f"{stream}: created merge revision {sc.revision}: {sc.path}")
    else:
        click.echo(f"{stream}: one head, nothing to merge")


@cli.command()
@stream_opt
@tenant_opt
@all_opt
@json_opt
@click.pass_context
def check(
    ctx: click.Context,
    streams: tuple[str, ...],
    tenants: tuple[str, ...],
    all_schemas: bool,
    as_json: bool,
) -> None:
    """Exit 1 when models and database differ (or revisions are pending), naming each difference.

    Opens with counts per tenant stream, then lists only what needs attention (each drift
    group once, with its tenants); --all (or --tenant) lists every schema."""
    progress = ReadProgress(quiet=as_json)
    try:
        report = command.check(
            streams=streams, tenants=tenants, on_progress=progress, config=_cfg(ctx)
        )
    finally:
        progress.close()
    if as_json:
        _print_json([r.as_dict() for r in report])
    else:
        _echo_lines(summary.check_lines(report, all_schemas=all_schemas or bool(tenants)))
    failure = summary.check_failure(report)
    if failure:
        raise CheckFailed(failure)


@cli.command()
@stream_opt
@tenant_opt
@click.option("--no-drift", is_flag=True, help="Skip comparing models with the database.")
@all_opt
@json_opt
@click.pass_context
def status(
    ctx: click.Context,
    streams: tuple[str, ...],
    tenants: tuple[str, ...],
    no_drift: bool,
    all_schemas: bool,
    as_json: bool,
) -> None:
    """Every schema and tenant: counts per stream first (revisions, pending, drift groups,
    errors, failed, orphans), then only what needs attention; --all (or --tenant) lists
    every schema."""
    progress = ReadProgress(quiet=as_json)
    try:
        report = command.status(
            streams=streams,
            tenants=tenants,
            drift=not no_drift,
            on_progress=progress,
            config=_cfg(ctx),
        )
    finally:
        progress.close()
    if as_json:
        _print_json(report.as_dict())
    else:
        _echo_lines(summary.status_lines(report, all_schemas=all_schemas or bool(tenants)))
    _fail_on_errors(report)


@cli.command()
@stream_opt
@tenant_opt
@json_opt
@click.pass_context
def verify(
    ctx: click.Context, streams: tuple[str, ...], tenants: tuple[str, ...], as_json: bool
) -> None:
    """Exit 1 when an applied revision's file was edited (or removed) after it was applied."""
    found = command.verify(streams=streams, tenants=tenants, config=_cfg(ctx))
    if as_json:
        _print_json([e.as_dict() for e in found])
    else:
        for e in found:
            click.echo(e.message)
        if not found:
            click.echo("every applied revision matches its file")
    if found:
        raise CheckFailed(f"{len(found)} applied revision(s) changed after they were applied")


@cli.command()
@click.option("--apply", "do_apply", is_flag=True, help="Perform the listed steps.")
@json_opt
@click.pass_context
def adopt(ctx: click.Context, do_apply: bool, as_json: bool) -> None:
    """Report the Alembic version tables in the database and whose they are; --apply writes
    and stamps baselines and renames tenants' version tables."""
    found = (adoption.apply if do_apply else adoption.survey)(config=_cfg(ctx))
    if as_json:
        _print_json({**found.as_dict(), "applied": do_apply})
        return
    for f in found.found:
        whose = f"stream {f.stream}" if f.stream else "no stream's history"
        if f.role == "tenant":
            whose += ", listed by its source" if f.listed else ", NOT listed by its source"
        elif f.role == "old environment":
            whose = "an Alembic environment no stream continues (left in place)"
        click.echo(f"{f.schema}.{f.table}: {_revs(f.revisions)} ({whose})")
    if not found.found:
        click.echo("no Alembic version tables found")
    for step in found.steps:
        done = " [done]" if do_apply and step.action != "manual" else ""
        click.echo(f"{step.stream}: {step.action}: {step.detail}{done}")
    if not found.steps:
        click.echo("nothing to do")
    elif not do_apply:
        click.echo("run 'alembic-schemas adopt --apply' to perform these steps")


@cli.group("tenants")
def tenants_group() -> None:
    """Tenant lifecycle: list, create (at head), drop."""


tenant_stream_opt = click.option(
    "-s", "--stream", default=None, help="Tenant stream (needed when there are several)."
)


@tenants_group.command("list")
@tenant_stream_opt
@json_opt
@click.pass_context
def tenants_list(ctx: click.Context, stream: str | None, as_json: bool) -> None:
    """Every tenant of the source: name, revision, pending count."""
    found = tenants.list_tenants(stream=stream, config=_cfg(ctx))
    if as_json:
        _print_json([t.as_dict() for t in found])
    for t in [] if as_json else found:
        if t.error:
            click.echo(f"{t.name}\t?\tERROR: {t.error}")
        else:
            click.echo(f"{t.name}\t{_revs(t.current)}\t{t.pending} pending")
    if not found and not as_json:
        click.echo("no tenants")
    errors = [t for t in found if t.error]
    if errors:
        raise AlembicSchemasError(
            f"{len(errors)} tenant(s) could not be read (reported on their lines; "
            f"{errors[0].name}: {errors[0].error})"
        )


@tenants_group.command("create")
@click.argument("name")
@tenant_stream_opt
@click.option("--replay", is_flag=True, help="Migrate revision by revision, not from the snapshot.")
@click.pass_context
def tenants_create(ctx: click.Context, name: str, stream: str | None, replay: bool) -> None:
    """Provision tenant NAME at head."""
    r = tenants.create(name, stream=stream, replay=replay, config=_cfg(ctx))
    click.echo(f"created tenant {r.schema} at {_revs(r.after)} ({r.seconds:.2f}s)")


@tenants_group.command("drop")
@click.argument("name")
@tenant_stream_opt
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--force", is_flag=True, help="Drop even if the tenant source does not list NAME.")
@click.pass_context
def tenants_drop(ctx: click.Context, name: str, stream: str | None, yes: bool, force: bool) -> None:
    """Drop tenant NAME's schema and everything in it."""
    if not yes:
        if not sys.stdin.isatty():
            raise ConfigError("refusing to drop without --yes when not on a terminal")
        click.confirm(f"Drop schema {name!r} and all its data?", abort=True)
    tenants.drop(name, stream=stream, force=force, config=_cfg(ctx))
    click.echo(f"dropped tenant {name}")


@cli.group("embedded")
def embedded_group() -> None:
    """The embedded PostgreSQL used when no URL is configured."""


@embedded_group.command("stop")
@click.pass_context
def embedded_stop(ctx: click.Context) -> None:
    """Stop the project's embedded PostgreSQL server."""
    project = load(_cfg(ctx))
    stopped = embedded.stop(project.root)
    click.echo("stopped" if stopped else "not running")


def main(argv: Sequence[str] | None = None) -> None:
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `alembic-schemas status | head` is fine
    try:
        code = cli.main(
            args=list(argv) if argv is not None else None,
            prog_name="alembic-schemas",
            standalone_mode=False,
        )
        # Without standalone mode click returns ctx.exit()'s code instead of exiting.
        sys.exit(code if isinstance(code, int) else 0)
    except click.UsageError as exc:
        # One line, like every other user error, with where to look for the right usage.
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        click.echo(f"alembic-schemas: error: {exc.format_message()}{hint}", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"alembic-schemas: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except click.Abort as exc:
        click.echo("alembic-schemas: aborted", err=True)
        # Ctrl-C outside a run (click turns it into Abort): exit as a shell reports SIGINT.
        sys.exit(130 if isinstance(exc.__cause__, KeyboardInterrupt) else 1)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
