"""Named tokens (README: The agent and the API): token create, list, revoke.

They talk to the agent's API (the agent is the one writer of tokens.json), starting one when
none runs, as `conveyor submit` does. Only the owner's token may manage tokens.
"""

from __future__ import annotations

import json
import os
from typing import Any

import click

from ..operations import OPERATIONS
from .app import JSON_OPTION, cli, connect
from .render import columns, timestamp


def _call(ctx: click.Context, operation: str, body: Any = None, fill: dict[str, str] | None = None) -> Any:
    """One request of ``operation`` (its path's ``{...}`` filled from ``fill``) to the agent."""
    from urllib.parse import quote

    op = OPERATIONS[operation]
    path = op.path
    for key, value in (fill or {}).items():
        path = path.replace("{" + key + "}", quote(value, safe=""))
    return connect(ctx).call(op.method, path, body=body)


@cli.group("token")
def token_group() -> None:
    """Named tokens for other users and machines, each bound to a policy (owner only)."""


@token_group.command("create", help=OPERATIONS["token_create"].summary + """.

Prints the token (only now: the agent keeps a hash of it). With --policy FILE the token's jobs
are checked against that policy file (the policy.yaml format); without it, against the node's
policy.yaml or the built-in defaults. A broken policy file is refused.""")
@click.argument("name")
@click.option("--policy", "policy_file", type=click.Path(exists=True, dir_okay=False), help="The policy the token's jobs must meet.")
@click.pass_context
def create_cmd(ctx: click.Context, name: str, policy_file: str | None) -> None:
    body: dict[str, Any] = {"name": name}
    if policy_file is not None:
        if connect(ctx).local:  # the agent reads the file itself, and follows its changes
            body["policy_path"] = os.path.abspath(policy_file)
        else:  # an agent elsewhere cannot read it: it keeps the content sent
            with open(policy_file, encoding="utf-8") as f:
                body["policy"] = f.read()
    made = _call(ctx, "token_create", body)
    click.echo(made["token"])
    bound = made["policy"] or "the node's policy"
    click.echo(f"token {made['name']!r} created, bound to {bound}; it is shown only once: keep it now", err=True)


@token_group.command("list", help=OPERATIONS["token_list"].summary + ".")
@JSON_OPTION
@click.pass_context
def list_cmd(ctx: click.Context, as_json: bool) -> None:
    tokens = _call(ctx, "token_list")["tokens"]
    if as_json:
        click.echo(json.dumps(tokens, indent=2))
        return
    rows = [("NAME", "POLICY", "CREATED", "LAST USED")]
    for t in tokens:
        rows.append((t["name"], t["policy"] or "(node policy)", timestamp(t["created_at"]), timestamp(t["last_used_at"])))
    click.echo(columns(rows))


@token_group.command("revoke", help=OPERATIONS["token_revoke"].summary + ".")
@click.argument("name")
@click.pass_context
def revoke_cmd(ctx: click.Context, name: str) -> None:
    _call(ctx, "token_revoke", fill={"name": name})
    click.echo(f"token {name!r} revoked")
