"""``modelbank jobs run``: expire holds, sweep expired grants, collect owed earnings and
deliver webhooks, once or in a loop (:mod:`modelbank.jobs`)."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from modelbank import jobs
from modelbank.cli.common import (
    DB_OPTION_HELP,
    cli_errors,
    console,
    migrated_engine,
    settings_for,
)
from modelbank.db.engine import session_factory
from modelbank.secrets import SecretBox, bind_deployment_key

jobs_app = typer.Typer(help="Background jobs (idempotent, bounded batches).", no_args_is_help=True)


@jobs_app.command("run")
def run(
    db: Annotated[str | None, typer.Option(help=DB_OPTION_HELP)] = None,
    loop: Annotated[
        bool, typer.Option("--loop", help="Keep running, one pass every --interval seconds")
    ] = False,
    interval: Annotated[
        float, typer.Option(min=0.1, max=3600, help="Seconds between passes with --loop")
    ] = 10.0,
    deliver: Annotated[bool, typer.Option(help="Deliver the webhook outbox")] = True,
) -> None:
    """Run every job once, or forever with --loop.

    The jobs: void expired holds, sweep expired grant remainders to platform_promotions,
    collect earnings owed from refunds, start auto top-ups and send email notices, deliver
    due webhooks with retries. Safe to run concurrently and to interrupt.

    Example: modelbank jobs run --loop --interval 30
    """
    with cli_errors():
        settings = settings_for(db)
        engine = migrated_engine(settings)
        factory = session_factory(engine)
        box = SecretBox.from_settings(settings)
        bind_deployment_key(box, engine)  # one key per deployment (refuses another)
        try:
            while True:
                with console.status("running jobs…") as status:
                    report = jobs.run_once(
                        factory,
                        box=box,
                        deliver=deliver,
                        settings=settings,
                        renew_manual_subscriptions=settings.manual_subscriptions_auto_renew,
                        on_step=lambda name: status.update(f"jobs: {name}…"),
                    )
                console.print(
                    f"holds expired {report.holds_expired} · grants swept {report.grants_swept}"
                    f" · owed earnings collected {report.debts_collected_ucr} µcr"
                    f" · pool debts collected {report.pool_debts_collected_ucr} µcr"
                    f" · marketplace expired {report.marketplace_expired}"
                    f" · webhooks delivered {report.webhooks_delivered},"
                    f" failed attempts {report.webhook_attempts_failed},"
                    f" given up {report.webhooks_given_up}"
                    f" · tasks done {report.tasks_done},"
                    f" failed attempts {report.task_attempts_failed}"
                    f" · sealed {report.transfers_sealed} transfers,"
                    f" {report.audit_records_sealed} audit records"
                    f" · monthly partitions made {report.partitions_made}",
                    highlight=False,
                )
                if not loop:
                    break
                time.sleep(interval)
        except KeyboardInterrupt:
            pass
        finally:
            engine.dispose()


def register(app: typer.Typer) -> None:
    app.add_typer(jobs_app, name="jobs")
