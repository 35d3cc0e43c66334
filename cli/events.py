"""`mfo events`: show stored events and replay them to subscriptions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.common import DEFAULT_URL, ConfigDir, ServerUrl, call, print_json, segment

app = typer.Typer(help="Show stored events and replay them.", no_args_is_help=True)


@app.command("show")
def show(
    event_id: str,
    url: ServerUrl = DEFAULT_URL,
    config_dir: ConfigDir = Path("config"),
) -> None:
    """Show an event with its deliveries and pipeline runs."""
    print_json(call(url, config_dir, "GET", f"/api/events/{segment(event_id)}"))


@app.command("replay")
def replay(
    event_id: str,
    missing_only: Annotated[
        bool,
        typer.Option(
            "--missing-only",
            help="Only subscriptions that have no delivery of the event yet.",
        ),
    ] = False,
    url: ServerUrl = DEFAULT_URL,
    config_dir: ConfigDir = Path("config"),
) -> None:
    """Deliver a stored event again to the subscriptions that match it now.

    Every new delivery gets a new webhook-id; pipelines do not run again.
    """
    result = call(
        url,
        config_dir,
        "POST",
        f"/api/events/{segment(event_id)}/replay",
        {"missing_only": missing_only},
    )
    for delivery_id in result["deliveries"]:
        typer.echo(delivery_id)
    typer.echo(f"{len(result['deliveries'])} deliveries queued", err=True)
