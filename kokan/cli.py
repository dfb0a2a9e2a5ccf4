"""The `kokan` command."""

from __future__ import annotations

import os
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import click
import redis

from kokan import config as config_module
from kokan import logs, migrate
from kokan.config import CONFIG_ENV, ConfigError, LoadedConfig
from kokan.db import Database
from kokan.errors import KokanError
from kokan.startup import StartupError, check_database, prepare_data_dir, require_migrated

EXIT_USAGE = 2
"""Configuration and start-up mistakes: the operator must change something."""


@dataclass
class CliState:
    config_file: Path | None


def _fail(message: str, status: int = EXIT_USAGE) -> NoReturn:
    click.echo(f"kokan: {message}", err=True)
    sys.exit(status)


def _load(ctx: click.Context, **overrides: Any) -> LoadedConfig:
    state: CliState = ctx.ensure_object(CliState)
    loaded = config_module.load(state.config_file, overrides=overrides)
    logs.configure(loaded.settings.log_level, config_module.secret_values(loaded.settings))
    return loaded


def _database(loaded: LoadedConfig) -> Database:
    settings = loaded.settings
    if not settings.database_url:
        prepare_data_dir(settings.resolved_data_dir)
    database = Database(settings.effective_database_url)
    check_database(database, loaded)
    return database


@click.group()
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="config file (default: $KOKAN_CONFIG, else ./config.yaml if present)",
)
@click.version_option(package_name="kokan")
@click.pass_context
def cli(ctx: click.Context, config_file: Path | None) -> None:
    """Kokan, a self-hosted, voice-first contact center."""
    ctx.obj = CliState(config_file=config_file)


@cli.command()
@click.option("--data-dir", type=click.Path(path_type=Path), default=None)
@click.option("--host", default=None, help="address the web server listens on")
@click.option("--port", type=int, default=None, help="port the web server listens on")
@click.option("--sip-host", default=None, help="address the SIP endpoint binds to and publishes")
@click.option("--sip-port", type=int, default=None, help="SIP port (UDP and TCP)")
@click.option(
    "--sip/--no-sip",
    "sip_enabled",
    default=None,
    help="start the SIP endpoint (default sip.enabled, on)",
)
@click.pass_context
def serve(
    ctx: click.Context,
    data_dir: Path | None,
    host: str | None,
    port: int | None,
    sip_host: str | None,
    sip_port: int | None,
    sip_enabled: bool | None,
) -> None:
    """Run everything in one process tree: embedded Redis (unless REDIS_URL), web, workers
    and the SIP endpoint."""
    from kokan.serve import Supervisor

    overrides = {
        "data_dir": data_dir,
        "host": host,
        "port": port,
        "sip.host": sip_host,
        "sip.port": sip_port,
        "sip.enabled": sip_enabled,
    }
    loaded = _load(ctx, **overrides)
    state: CliState = ctx.ensure_object(CliState)
    sys.exit(Supervisor(loaded=loaded, config_file=state.config_file).run())


@cli.command()
@click.option("--host", default=None)
@click.option("--port", type=int, default=None)
@click.option("--web-workers", type=int, default=None, help="gunicorn worker processes")
@click.pass_context
def web(ctx: click.Context, host: str | None, port: int | None, web_workers: int | None) -> None:
    """Run only the web server under gunicorn (production: several behind a load balancer)."""
    from kokan.serve import web_command

    loaded = _load(ctx, host=host, port=port, web_workers=web_workers)
    settings = loaded.settings
    if not settings.redis_url:
        _fail("redis_url: not set; `kokan web` needs REDIS_URL (only `kokan serve` embeds Redis)")
    require_migrated(_database(loaded))
    command = web_command(settings.host, settings.port, settings.web_workers)
    env = dict(os.environ)
    env.update({"KOKAN_HOST": settings.host, "KOKAN_PORT": str(settings.port)})
    os.execve(command[0], command, env)  # noqa: S606 - replace this process with gunicorn


@cli.command()
@click.option("--host", default=None)
@click.option("--live-port", type=int, default=None)
@click.pass_context
def live(ctx: click.Context, host: str | None, live_port: int | None) -> None:
    """Run the pages' live updates (Server-Sent Events) under a threaded gunicorn."""
    from kokan.serve import live_command

    loaded = _load(ctx, host=host, live_port=live_port)
    settings = loaded.settings
    if not settings.redis_url:
        _fail("redis_url: not set; `kokan live` needs REDIS_URL (only `kokan serve` embeds Redis)")
    require_migrated(_database(loaded))
    command = live_command(settings.host, settings.effective_live_port, settings.live_threads)
    os.execve(command[0], command, dict(os.environ))  # noqa: S606 - become gunicorn


@cli.command()
@click.option("--burst", is_flag=True, help="stop when the queues are empty")
@click.option("--check", is_flag=True, help="enqueue a self-check and wait for a worker to run it")
@click.option(
    "--timeout", type=float, default=10.0, show_default=True, help="seconds, with --check"
)
@click.pass_context
def worker(ctx: click.Context, burst: bool, check: bool, timeout: float) -> None:
    """Run an rq worker for Kokan's queues."""
    from kokan.redis_conn import connect
    from kokan.startup import check_redis
    from kokan.worker import check_worker, run_worker

    loaded = _load(ctx)
    state: CliState = ctx.ensure_object(CliState)
    if state.config_file is not None:
        # jobs load the configuration themselves (in rq's work horses): let them find this file
        os.environ[CONFIG_ENV] = str(state.config_file.resolve())
    url = loaded.settings.redis_url
    if not url:
        _fail("redis_url: not set; `kokan worker` needs REDIS_URL")
    check_redis(url, loaded)
    connection = connect(url)
    if check:
        result = check_worker(connection, timeout)
        if result is None:
            _fail(f"no worker ran the self-check within {timeout:g} s", status=1)
        click.echo(f"worker ok: pid {result['pid']} on {result['host']}")
        return
    run_worker(connection, open_migrated_database(loaded), burst=burst, settings=loaded.settings)


@cli.command()
@click.pass_context
def router(ctx: click.Context) -> None:
    """Run the ACD's routing loop: applies config.yaml's queues and agents, then makes
    offers and rings agents through Twilio until SIGTERM or Ctrl-C."""
    from acd.twilio_runtime import build_router
    from kokan.redis_conn import connect
    from kokan.startup import check_redis

    loaded = _load(ctx)
    url = loaded.settings.redis_url
    if not url:
        _fail("redis_url: not set; `kokan router` needs REDIS_URL")
    check_redis(url, loaded)
    routing = build_router(connect(url), loaded.settings)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: stop.set())
    routing.run(stop)


@cli.command()
@click.pass_context
def cron(ctx: click.Context) -> None:
    """Enqueue Kokan's periodic jobs (stalled recording fetches, retention) on schedule."""
    from kokan.periodic import scheduler
    from kokan.redis_conn import connect
    from kokan.startup import check_redis

    loaded = _load(ctx)
    url = loaded.settings.redis_url
    if not url:
        _fail("redis_url: not set; `kokan cron` needs REDIS_URL")
    check_redis(url, loaded)
    scheduler(connect(url)).start()  # type: ignore[no-untyped-call]  # rq ships it untyped


@cli.group(invoke_without_command=True)
@click.option("--sip-host", default=None, help="address the SIP endpoint binds to and publishes")
@click.option("--sip-port", type=int, default=None, help="SIP port (UDP and TCP); worker i: + i")
@click.option("--rtp-port", type=int, default=None, help="first RTP port of the (first) worker")
@click.option("--tls-port", type=int, default=None, help="SIP over TLS port (sip.tls_port)")
@click.option(
    "--workers",
    type=int,
    default=None,
    help="media worker processes to start and supervise (default sip.workers, 1)",
)
@click.pass_context
def sip(
    ctx: click.Context,
    sip_host: str | None,
    sip_port: int | None,
    rtp_port: int | None,
    tls_port: int | None,
    workers: int | None,
) -> None:
    """Run the SIP media worker (or, with --workers N, a supervised pool of N): answers calls
    over SIP and walks them through the published flows until SIGTERM or Ctrl-C, then hangs
    up its calls and stops."""
    if ctx.invoked_subcommand is not None:
        return
    overrides = {
        "sip.host": sip_host,
        "sip.port": sip_port,
        "sip.rtp_port": rtp_port,
        "sip.tls_port": tls_port,
        "sip.workers": workers,
    }
    loaded = _load(ctx, **overrides)
    if loaded.settings.sip.workers > 1:
        from ivr.sip_pool import run_pool_until_signalled

        state: CliState = ctx.ensure_object(CliState)
        sys.exit(run_pool_until_signalled(loaded.settings.sip, state.config_file))
    from ivr.sip_worker import run_until_signalled

    client = open_redis(loaded)
    run_until_signalled(loaded.settings, open_migrated_database(loaded), client)


@sip.command("kamailio-config")
@click.option(
    "--out",
    "folder",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="folder for kamailio.cfg, dispatcher.list and Kamailio's pid file, socket, runtime",
)
@click.option("--listen-host", default=None, help="Kamailio's SIP address (default sip.host)")
@click.option("--listen-port", type=int, default=None, help="Kamailio's SIP port (default 5060)")
@click.option(
    "--from-pool",
    is_flag=True,
    help="dispatch to the workers live in Redis (every machine) instead of the configured layout",
)
@click.pass_context
def sip_kamailio_config(
    ctx: click.Context,
    folder: Path,
    listen_host: str | None,
    listen_port: int | None,
    from_pool: bool,
) -> None:
    """Write a Kamailio configuration that spreads calls over the SIP worker pool."""
    from ivr import kamailio
    from ivr.sip_pool import PoolRegistry, layout

    parent = ctx.parent
    overrides = (
        {}
        if parent is None
        else {
            "sip.host": parent.params.get("sip_host"),
            "sip.port": parent.params.get("sip_port"),
            "sip.rtp_port": parent.params.get("rtp_port"),
            "sip.workers": parent.params.get("workers"),
        }
    )
    loaded = _load(ctx, **overrides)
    sip_settings = loaded.settings.sip
    port = kamailio.DEFAULT_LISTEN_PORT if listen_port is None else listen_port
    if not 1 <= port <= 65535:
        _fail(f"--listen-port: {port} is not a port (1-65535)")
    if from_pool:
        destinations = kamailio.from_pool(PoolRegistry(open_redis(loaded)).live())
    else:
        slots = layout(sip_settings)
        if any(slot.port == port for slot in slots):
            _fail(f"--listen-port: {port} is a worker's SIP port (sip.port, sip.workers)")
        destinations = kamailio.from_layout(slots, sip_settings)
    files = kamailio.write(folder, destinations, listen_host or sip_settings.host, port)
    count = len(destinations)
    click.echo(
        f"wrote {files.config} and {files.dispatcher_list} "
        f"({count} worker{'' if count == 1 else 's'})"
    )
    click.echo("run: " + " ".join(kamailio.command(files)))


@cli.group()
def db() -> None:
    """Database migrations."""


@db.command("upgrade")
@click.argument("revision", default="head")
@click.pass_context
def db_upgrade(ctx: click.Context, revision: str) -> None:
    """Migrate the database up to REVISION (default: the newest)."""
    database = _database(_load(ctx))
    migrate.upgrade(database, revision)
    click.echo(f"database at revision {migrate.current_revision(database)}")


@db.command("downgrade")
@click.argument("revision")
@click.pass_context
def db_downgrade(ctx: click.Context, revision: str) -> None:
    """Migrate the database down to REVISION ("base" removes every table)."""
    database = _database(_load(ctx))
    migrate.downgrade(database, revision)
    click.echo(f"database at revision {migrate.current_revision(database) or 'base'}")


@db.command("current")
@click.pass_context
def db_current(ctx: click.Context) -> None:
    """Print the database's revision and the newest one."""
    database = _database(_load(ctx))
    current, head = migrate.current_revision(database), migrate.head_revision(database)
    click.echo(f"current {current or 'base'}, newest {head}")


@cli.group()
def users() -> None:
    """People who sign in."""


@users.command("create")
@click.argument("name")
@click.option("--role", required=True, type=click.Choice(["admin", "supervisor", "agent"]))
@click.option("--token", is_flag=True, help="print an API token (Authorization: Bearer) instead")
@click.pass_context
def users_create(ctx: click.Context, name: str, role: str, token: bool) -> None:
    """Create a user and print a one-time password (or an API token)."""
    from admin.services import create_user, issue_token

    database = _database(_load(ctx))
    require_migrated(database)
    with database.unit_of_work() as session:
        created = create_user(session, name, role)
        secret = issue_token(session, created.user) if token else None
    if secret is not None:
        click.echo(f"user {name!r} ({role}) created; API token (shown only now): {secret}")
    else:
        click.echo(
            f"user {name!r} ({role}) created; one-time password (shown only now): "
            f"{created.password}"
        )


@cli.group("config")
def config_group() -> None:
    """Configuration."""


@config_group.command("show")
@click.pass_context
def config_show(ctx: click.Context) -> None:
    """Print the effective configuration, where each value came from, secrets masked."""
    for line in config_module.describe(_load(ctx)):
        click.echo(line)


def load_config(ctx: click.Context) -> LoadedConfig:
    """For command groups that live in their domain packages (e.g. `kokan flows`)."""
    return _load(ctx)


def open_migrated_database(loaded: LoadedConfig) -> Database:
    database = _database(loaded)
    require_migrated(database)
    return database


def open_redis(loaded: LoadedConfig) -> redis.Redis:
    """The Redis the settings name, else the embedded one of the `kokan serve` running on
    this data folder (found where `kokan.embedded_redis` puts it); a clear error if none."""
    from kokan.embedded_redis import EmbeddedRedis
    from kokan.redis_conn import connect
    from kokan.startup import check_redis

    settings = loaded.settings
    if settings.redis_url:
        check_redis(settings.redis_url, loaded)
        return connect(settings.redis_url)
    embedded = EmbeddedRedis(settings.resolved_data_dir)
    url = embedded.url if embedded.socket_path.exists() else _embedded_tcp_url(embedded.directory)
    not_running = StartupError(
        f"Kokan is not running on {settings.resolved_data_dir} (no embedded Redis answers "
        f"in {embedded.directory}); start `kokan serve` or set REDIS_URL"
    )
    if url is None:
        raise not_running
    client = connect(url)
    try:
        client.ping()
    except redis.RedisError:
        client.close()
        raise not_running from None
    return client


def _embedded_tcp_url(directory: Path) -> str | None:
    """A data folder too deep for a unix socket puts the embedded Redis on a loopback port,
    written in its redis.conf."""
    try:
        lines = (directory / "redis.conf").read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    ports = [words[1] for words in map(str.split, lines) if words[:1] == ["port"] and words[1:]]
    if len(ports) != 1 or not ports[0].isdigit() or ports[0] == "0":
        return None
    return f"redis://127.0.0.1:{ports[0]}/0"


def _add_domain_commands() -> None:
    from acd.cli import acd
    from ivr.cli import flows

    cli.add_command(flows)
    cli.add_command(acd)


_add_domain_commands()


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        _fail("aborted", status=1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (ConfigError, StartupError) as exc:
        _fail(str(exc))
    except KokanError as exc:
        _fail(exc.message, status=1)
