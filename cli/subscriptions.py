"""`mfo subscriptions`: list, pause, resume and re-key subscriptions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.common import DEFAULT_URL, ConfigDir, ServerUrl, call, print_json, segment

app = typer.Typer(
    help="List, pause, resume and re-key outgoing subscriptions.", no_args_is_help=True
)
_BASE = "/api/notifications/subscriptions"


@app.command("list")
def list_subscriptions(
    url: ServerUrl = DEFAULT_URL, config_dir: ConfigDir = Path("config")
) -> None:
    """List subscriptions with their status and URL."""
    rows = call(url, config_dir, "GET", _BASE)["subscriptions"]
    for row in rows:
        name = row.get("name") or "-"
        typer.echo(f"{row['id']}  {name}  {row['status']}  {row['url']}")
    typer.echo(f"{len(rows)} subscriptions", err=True)


@app.command("show")
def show(
    subscription: Annotated[str, typer.Argument(help="Subscription id or name.")],
    url: ServerUrl = DEFAULT_URL,
    config_dir: ConfigDir = Path("config"),
) -> None:
    """Show one subscription as JSON."""
    print_json(call(url, config_dir, "GET", f"{_BASE}/{segment(subscription)}"))


@app.command("pause")
def pause(
    subscription: Annotated[str, typer.Argument(help="Subscription id or name.")],
    url: ServerUrl = DEFAULT_URL,
    config_dir: ConfigDir = Path("config"),
) -> None:
    """Stop sending; new and due deliveries wait until `resume`."""
    row = call(url, config_dir, "POST", f"{_BASE}/{segment(subscription)}/pause")
    typer.echo(f"{row['id']} {row['status']}")


@app.command("resume")
def resume(
    subscription: Annotated[str, typer.Argument(help="Subscription id or name.")],
    url: ServerUrl = DEFAULT_URL,
    config_dir: ConfigDir = Path("config"),
) -> None:
    """Send again after a pause or a disable; held deliveries go out now."""
    row = call(url, config_dir, "POST", f"{_BASE}/{segment(subscription)}/resume")
    typer.echo(
        f"{row['id']} {row['status']}; {row['resumed_deliveries']} held deliveries"
        " queued"
    )


@app.command("rotate-secret")
def rotate_secret(
    subscription: Annotated[str, typer.Argument(help="Subscription id or name.")],
    grace: Annotated[
        str, typer.Option(help="How long the old secret keeps signing, such as 24h.")
    ] = "24h",
    secret: Annotated[
        str | None, typer.Option(help="The new whsec_ secret; generated if left out.")
    ] = None,
    url: ServerUrl = DEFAULT_URL,
    config_dir: ConfigDir = Path("config"),
) -> None:
    """Replace the signing secret and print the new one.

    Until the grace period ends, each webhook carries a signature with the
    new secret and one with the old secret.
    """
    body = {"grace": grace} if secret is None else {"grace": grace, "secret": secret}
    row = call(
        url, config_dir, "POST", f"{_BASE}/{segment(subscription)}/rotate-secret", body
    )
    typer.echo(row["secret"])
    typer.echo(
        f"the old secret signs too until {row['previous_secret_expires_at']}", err=True
    )
