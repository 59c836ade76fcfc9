"""`aat runner` (a Celery job runner) and `aat gc` (artifact garbage collection)."""

from __future__ import annotations

import typer

from service.core.errors import ConfigError


def register(app: typer.Typer) -> None:
    app.command("runner")(runner)
    app.command("gc")(gc)


def runner(
    concurrency: int | None = typer.Option(None, "--concurrency", "-c", min=1, max=64,
                                           help="Jobs run at once (default AAT_JOB_THREADS)."),
    loglevel: str = typer.Option("INFO", "--loglevel", help="DEBUG, INFO, WARNING or ERROR."),
) -> None:
    """Run queued jobs as a Celery job runner.

    Jobs come from the queue on AAT_BROKER_URL (Redis); runs until Ctrl-C or SIGTERM.
    """
    from service.core.logs import configure_logging
    from service.jobs.celery_app import run_worker
    from service.settings import load_settings
    from service.storage.db import preflight

    settings = load_settings()
    if not settings.broker_url:
        raise ConfigError("`aat runner` needs a broker: set AAT_BROKER_URL=redis://host:6379/0 "
                          "(without one, `aat up` runs jobs itself)")
    configure_logging(loglevel, settings.log_format)
    preflight(settings.effective_database_url)
    run_worker(settings, concurrency=concurrency or settings.job_threads, loglevel=loglevel)


def gc(
    days: float | None = typer.Option(None, "--days", min=0.0,
                                      help="Delete artifacts of jobs finished more than this "
                                           "many days ago (default AAT_GC_DAYS)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only report what would go."),
) -> None:
    """Delete the stored files of old finished jobs.

    Inputs, outputs and cached tiles of jobs finished more than --days ago.
    """
    from service.settings import load_settings
    from service.storage.gc import collect_garbage
    from service.storage.job_store import SqlJobStore
    from service.storage.stores import open_artifacts

    settings = load_settings()
    report = collect_garbage(SqlJobStore(settings.effective_database_url),
                             open_artifacts(settings),
                             days=settings.gc_days if days is None else days, dry_run=dry_run)
    verb = "would free" if report.dry_run else "freed"
    typer.echo(f"{report.old_jobs} old jobs; {verb} {report.files} files "
               f"({report.bytes / 1e6:.1f} MB)")
