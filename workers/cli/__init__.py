"""The `farm` command.

It lives beside the Celery adapter because submitting work means sending Celery
messages; farm/ stays free of Celery. Errors are translated here, at the edge:
a FarmError becomes one message on stderr and its exit code, never a traceback.

Exit codes: 0 success; 1 the run (or the job) ended without success; 2 bad input
(usage, a missing or invalid file, an unknown setting); 3 the farm is unavailable
(Redis unreachable, darknet not found, a port in use); 130 interrupted.
"""
from __future__ import annotations

import sys

import click

from farm import settings as farm_settings
from farm.errors import FarmError, Severity

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_UNAVAILABLE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class Context:
    """What every command needs: the resolved settings, and Redis/Celery on demand."""

    def __init__(self, cli_values: dict, config_file: str | None):
        self._cli_values = cli_values
        self._config_file = config_file
        self._settings = None

    @property
    def settings(self) -> farm_settings.Settings:
        if self._settings is None:
            self._settings = farm_settings.load(self._cli_values, config_file=self._config_file)
        return self._settings

    def store(self):
        from farm.store import Store
        s = self.settings
        return Store(s.effective_redis_url, log_tail_lines=s.log_tail_lines)

    def celery(self):
        """The Celery app, configured with these settings (flags included)."""
        from workers.app import app, configure
        return configure(app, self.settings)


pass_ctx = click.make_pass_decorator(Context)


def parse_size(value: str, flag: str, presets: dict | None = None) -> tuple[int, int]:
    """WIDTHxHEIGHT (or a preset's name) as two ints; BadInput naming the flag."""
    from farm.errors import BadInput
    preset = (presets or {}).get(value.lower())
    if preset:
        return preset
    try:
        w, h = (int(v) for v in value.lower().split("x"))
    except ValueError:
        names = f" (or {' / '.join(presets)})" if presets else ""
        raise BadInput(f"{flag} {value!r} is not WIDTHxHEIGHT",
                       hint=f"for example {flag} 416x416{names}") from None
    return w, h


#: Warnings printed when a command goes ahead anyway (the rest are counted).
SHOWN_WARNINGS = 5


def refusing(fn):
    """Run fn; when it refuses input, print every error but the first and the first
    warnings; the error itself (`farm: error:` with its hint) then names the first."""
    from farm.errors import FindingsError
    try:
        return fn()
    except FindingsError as e:
        errors = [f for f in e.findings if f.severity is Severity.ERROR]
        for finding in errors[1:]:
            click.echo(str(finding), err=True)
        warn_findings(f for f in e.findings if f.severity is not Severity.ERROR)
        raise


def warn_findings(findings) -> None:
    """Print the first SHOWN_WARNINGS findings and how many more there are."""
    findings = list(findings)
    for finding in findings[:SHOWN_WARNINGS]:
        click.echo(f"farm: {finding}", err=True)
    if len(findings) > SHOWN_WARNINGS:
        click.echo(f"farm: … and {len(findings) - SHOWN_WARNINGS} more warnings "
                   "(`farm dataset lint`, `farm cfg check` list them all)", err=True)


def pull_from_host(ctx: Context, host: str, path: str, dest) -> None:
    """Copy a file from an inventory host (sha256 checked on both sides)."""
    from farm.remote import flow, transfer
    with flow.connect(ctx.settings, host) as h:
        transfer.pull(h, path, dest)


def listeners(ctx: Context, queue: str, timeout: float = 1.5) -> list[str]:
    """The workers consuming `queue` now (they answer within `timeout`)."""
    from workers.presence import active_queues
    replies = active_queues(ctx.celery(), ctx.store(), timeout)
    return sorted(node for node, queues in replies.items()
                  if any(q.get("name") == queue for q in queues or ()))


def require_listener(ctx: Context, host: str) -> None:
    """Refuse now, not after an hour's wait, to send work to a host with no worker up."""
    from farm.errors import FarmUnavailable
    from farm.queues import host_queue
    if not listeners(ctx, host_queue(host)):
        raise FarmUnavailable(f"no worker listens on {host_queue(host)}: {host}'s worker is not "
                              "running, or cannot reach Redis",
                              hint=f"start it on {host} (`farm hosts plan {host}` prints the "
                                   "command), then `farm hosts workers`")


def wait_task(result, what: str, timeout: float) -> dict:
    """The return value of a task sent to another host, or its error as a FarmError."""
    from celery.exceptions import TimeoutError as CeleryTimeout
    from farm.errors import FarmUnavailable
    try:
        value = result.get(timeout=timeout, propagate=False)
    except CeleryTimeout:
        raise FarmUnavailable(f"{what}: no answer within {timeout:g} s (task {result.id})",
                              hint="is that host's worker up? `farm hosts workers`; the task "
                                   "stays queued and runs when it is") from None
    if result.failed():
        raise FarmError(f"{what} failed: {type(value).__name__}: {value}")
    return value


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_file", metavar="FILE", help="TOML config file.")
@click.option("--data-dir", metavar="DIR", help="Farm data directory (FARM_DATA_DIR).")
@click.option("--redis-url", metavar="URL", help="Redis of an existing farm (FARM_REDIS_URL).")
@click.option("--darknet", metavar="PATH", help="darknet binary (FARM_DARKNET).")
@click.pass_context
def cli(ctx: click.Context, config_file, data_dir, redis_url, darknet) -> None:
    """The darknet training farm: queue, watch and restart darknet training runs.

    \b
    Examples:
      farm up                                   # embedded farm: Redis, workers, beat, Flower
      farm train data/obj.data yolov4-tiny.cfg --set learning_rate=0.001 --wait
      farm status r261126-1a2b3c                # attempts, outcomes, what changed
      farm logs r261126-1a2b3c -f
    """
    ctx.obj = Context({"data_dir": data_dir, "redis_url": redis_url, "darknet": darknet},
                      config_file)
    _current.append(ctx.obj)


_current: list[Context] = []  # the command's context, for errors that escape it


#: command groups with a module of their own (workers/cli/<name>.py)
GROUPS = ("cfg", "dataset", "hosts", "sweep")
#: options of `farm` itself that take a value (to find the command after them)
_VALUED = ("--config", "--data-dir", "--redis-url", "--darknet")


def _register(argv: list[str]) -> None:
    """Add the commands. A group named on the command line is imported alone: the other
    modules pull in numpy, OpenCV and paramiko, which `farm sweep show` never needs."""
    import importlib
    command = _command_of(argv)
    if command in GROUPS:
        cli.add_command(getattr(importlib.import_module(f"workers.cli.{command}"), command))
        return
    from workers.cli import acceptance, evalcmd, farmctl, gc, runs
    for group in (runs, farmctl, evalcmd, gc, acceptance):
        for c in group.COMMANDS:
            cli.add_command(c)
    for module in GROUPS:
        cli.add_command(getattr(importlib.import_module(f"workers.cli.{module}"), module))


def _command_of(argv: list[str]) -> str | None:
    args = iter(argv)
    for arg in args:
        if arg in _VALUED:
            next(args, None)
        elif not arg.startswith("-"):
            return arg
    return None


def main(argv: list[str] | None = None) -> int:
    _register(sys.argv[1:] if argv is None else argv)
    try:
        rv = cli.main(args=argv, prog_name="farm", standalone_mode=False)
    except FarmError as e:
        click.echo(f"farm: error: {e}", err=True)
        return e.exit_code
    except click.exceptions.Abort:
        click.echo("farm: interrupted", err=True)
        return EXIT_INTERRUPTED
    except click.ClickException as e:
        e.show()
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        click.echo("farm: interrupted", err=True)
        return EXIT_INTERRUPTED
    except Exception as e:  # Celery's own Redis errors (kombu), past farm.store's edge
        unavailable = _redis_failure(e)
        if unavailable is None:
            raise
        click.echo(f"farm: error: {unavailable}", err=True)
        return unavailable.exit_code
    return rv if isinstance(rv, int) else EXIT_OK


def _redis_failure(e: Exception):
    """A Redis failure (direct or wrapped by kombu) as the farm's error (translated by
    farm.store.redis, the one module that knows redis's exceptions); None if `e` is
    something else."""
    from kombu.exceptions import OperationalError
    from farm.store.redis import is_redis_error, redis_unavailable
    if not (is_redis_error(e) or isinstance(e, OperationalError)):
        return None
    try:
        url = (_current[-1].settings if _current else farm_settings.load()).effective_redis_url
    except FarmError:
        url = "the configured Redis"
    cause = e.__cause__ or e.__context__ if isinstance(e, OperationalError) else e
    return redis_unavailable(url, cause if is_redis_error(cause) else e)


if __name__ == "__main__":
    sys.exit(main())
