"""The agent and the engine's leftovers: serve (with --status, --stop, --rotate-token), cleanup."""

from __future__ import annotations

import os
import sys

import click

from .app import cli, connect
from .render import err_console, escape

@cli.command("serve")
@click.option("--tcp", metavar="[HOST:]PORT", help="Also serve the API on TCP: PORT is on 127.0.0.1; another HOST must be given explicitly.")
@click.option("--tcp-allow-owner", is_flag=True, help="Accept the owner's token (agent.token) on --tcp too; by default TCP serves named tokens only (conveyor token create).")
@click.option("--engine", type=click.Choice(["docker", "podman", "swarm", "slurm", "none"]), help="The node's container engine (default: config.toml [engine] name, or $CONVEYOR_ENGINE, or docker); none runs process jobs only.")
@click.option("--status", is_flag=True, help="Say whether an agent runs for this state directory (exit 0 if so, 3 if not).")
@click.option("--stop", is_flag=True, help="Stop the running agent; its jobs keep running.")
@click.option("--rotate-token", is_flag=True, help="Replace the API token (a running agent takes the new one at once).")
@click.pass_context
def serve(ctx: click.Context, tcp: str | None, tcp_allow_owner: bool, engine: str | None, status: bool, stop: bool,
          rotate_token: bool) -> None:
    """Run the agent in the foreground until SIGTERM or Ctrl-C: supervise this state directory
    and serve the API on its unix socket agent.sock (and on --tcp).

    Queued jobs are launched, running ones watched, finished ones recorded. Stopping the
    agent leaves running jobs running; the next one re-attaches them. `conveyor submit`
    starts one in the background when none runs. Requests need a token: the owner's in
    agent.token (on the unix socket; on TCP only with --tcp-allow-owner), or a named one
    (conveyor token create).
    """
    from ..daemon import SupervisorLock, stop_supervisor
    from ..home import Home

    home = Home(ctx.obj["home"])
    if rotate_token:
        from ..agent.auth import token_path, write_token

        write_token(home.root)
        click.echo(f"new token written to {token_path(home.root)}; the old one no longer works")
        return
    if status or stop:
        from ..agent.server import read_info

        pid = SupervisorLock(home).holder()
        if not pid:
            click.echo(f"no agent runs for {home.root}")
            sys.exit(3 if status else 0)
        if status:
            info = read_info(home.root) or {}
            where = "".join(f", API on {a}" for a in (info.get("socket") and "unix:" + info["socket"], info.get("url")) if a)
            click.echo(f"agent pid {pid} runs for {home.root}{where}")
            return
        stop_supervisor(home)
        click.echo(f"stopped agent pid {pid}; running jobs keep running")
        return
    import logging

    if engine:  # read with config.toml, as the environment is (capacity.SchedulingConfig.load)
        os.environ["CONVEYOR_ENGINE"] = engine
    # The supervisor's log (stderr; supervisor.log when started in the background) is where
    # a user sees reconcile results, orphan containers and engine reconnects.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s conveyor %(levelname)s %(message)s")
    from ..agent.server import serve as serve_agent

    if tcp_allow_owner and not tcp:
        raise click.UsageError("--tcp-allow-owner applies to the TCP listener: give --tcp too")
    serve_agent(home.root, tcp=tcp, announce=lambda text: err_console.print(escape(text), soft_wrap=True), tcp_allow_owner=tcp_allow_owner)


@cli.command("ui")
@click.option("--print-only", is_flag=True, help="Print the dashboard's URL; open no browser.")
@click.pass_context
def ui(ctx: click.Context, print_only: bool) -> None:
    """Open the dashboard of this state directory's agent in a browser (it is served on the
    agent's TCP listener: conveyor serve --tcp PORT). Without a browser, print its URL."""
    import webbrowser

    from ..agent.server import read_info
    from ..home import Home

    root = Home(ctx.obj["home"]).root
    url = (read_info(root) or {}).get("url")
    if not url:
        raise click.ClickException(f"no agent serves {root} on TCP, and a browser reaches the dashboard only there: "
                                   "start one with 'conveyor serve --tcp 8080' (and log in with a token)")
    click.echo(f"{url}/ui")
    if not print_only:
        try:
            webbrowser.get().open(f"{url}/ui")
        except webbrowser.Error:
            click.echo("no browser found here: open the URL above in one", err=True)


@cli.command("cleanup")
@click.pass_context
def cleanup(ctx: click.Context) -> None:
    """Remove every container, volume and network this executor made, and nothing else."""
    counts = connect(ctx).cleanup()
    click.echo(", ".join(f"{n} {kind}" for kind, n in counts.items()) + " removed")
