"""Leases (README: Leases): lease create, list, inspect, renew, release [--drain], keepalive.

They talk to the agent, as every command does; the agent keeps the lease's deadline in its
store. ``lease keepalive`` is the holder for a shell script: it renews until it is killed, and
when it is killed (with the script) the lease expires by itself.
"""

from __future__ import annotations

import json
import time

import click

from ..operations import OPERATIONS
from .app import JSON_OPTION, cli, connect
from .render import columns, size, timestamp


@cli.group("lease")
def lease_group() -> None:
    """Reserve a share of this node for a holder that keeps it alive (owner only)."""


def _show(lease: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(lease, indent=2))
        return
    rows = [
        ("id", lease["id"]),
        ("state", lease["state"] + (f" ({lease['reason']})" if lease.get("reason") else "")),
        ("share", _share(lease)),
        ("in use", _use(lease)),
        ("keepalive", f"{lease['keepalive']:g}s" + (f", expires in {lease['expires_in']:.1f}s" if lease.get("expires_in") is not None else "")),
        ("created", timestamp(lease["created_at"])),
        ("labels", ",".join(f"{k}={v}" for k, v in sorted(lease["labels"].items())) or "-"),
    ]
    if "jobs" in lease:
        rows.append(("jobs", ", ".join(f"{j['id']} {j['state']}" for j in lease["jobs"]) or "-"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key:<{width}}  {value}")


def _share(lease: dict) -> str:
    return f"{lease['cpus']:g} CPUs, {size(lease['memory'])}" + (f", {lease['gpus']} GPU(s)" if lease["gpus"] else "")


def _use(lease: dict) -> str:
    used = lease.get("in_use")
    return f"{used['cpus']:g} CPUs, {size(used['memory'])} by {used['jobs']} job(s)" if used else "-"


def lease_rows(leases: list[dict]) -> str:
    """The leases as a table (`lease list`, `machine`, `queue`)."""
    rows = [("LEASE ID", "STATE", "SHARE", "IN USE", "EXPIRES IN")]
    for lease in leases:
        expires = f"{lease['expires_in']:.1f}s" if lease.get("expires_in") is not None else "-"
        rows.append((lease["id"], lease["state"], _share(lease), _use(lease), expires))
    return columns(rows)


@lease_group.command("create", help=OPERATIONS["lease_create"].summary + ".\n\nPrints the lease id.")
@click.option("--cpus", type=float, default=0.0, help="CPUs to reserve.")
@click.option("-m", "--memory", default="0", help="Memory to reserve (8g, 512m).")
@click.option("--gpus", type=int, default=0, help="GPUs to reserve.")
@click.option("--gpu-vendor", type=click.Choice(["nvidia", "amd", "intel"]), default="nvidia", help="GPU vendor.")
@click.option("--keepalive", default="30s", show_default=True, help="It expires this long after its last renewal.")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help="A label of the lease.")
@JSON_OPTION
@click.pass_context
def create_cmd(ctx, cpus, memory, gpus, gpu_vendor, keepalive, labels, as_json) -> None:
    pairs = dict(label.partition("=")[::2] for label in labels)
    lease = connect(ctx).lease_create(cpus=cpus, memory=memory, gpus=gpus, gpu_vendor=gpu_vendor, keepalive=keepalive,
                                      labels=pairs)
    click.echo(json.dumps(lease, indent=2) if as_json else lease["id"])


@lease_group.command("list", help=OPERATIONS["lease_list"].summary + ".")
@click.option("-a", "--all", "all_", is_flag=True, help="Ended leases too.")
@JSON_OPTION
@click.pass_context
def list_cmd(ctx, all_, as_json) -> None:
    leases = connect(ctx).lease_list(all_)
    click.echo(json.dumps(leases, indent=2) if as_json else lease_rows(leases))


@lease_group.command("inspect", help=OPERATIONS["lease_info"].summary + ".")
@click.argument("lease")
@JSON_OPTION
@click.pass_context
def inspect_cmd(ctx, lease, as_json) -> None:
    _show(connect(ctx).lease_info(lease), as_json)


@lease_group.command("renew", help=OPERATIONS["lease_renew"].summary + ".")
@click.argument("lease")
@JSON_OPTION
@click.pass_context
def renew_cmd(ctx, lease, as_json) -> None:
    _show(connect(ctx).lease_renew(lease), as_json)


@lease_group.command("resize", help=OPERATIONS["lease_resize"].summary + ".")
@click.argument("lease")
@click.option("--cpus", type=float, help="The new CPUs.")
@click.option("-m", "--memory", help="The new memory (8g, 512m).")
@JSON_OPTION
@click.pass_context
def resize_cmd(ctx, lease, cpus, memory, as_json) -> None:
    _show(connect(ctx).lease_resize(lease, cpus, memory), as_json)


@lease_group.command("release", help=OPERATIONS["lease_release"].summary + ".")
@click.argument("lease")
@click.option("--drain", is_flag=True, help="Let its jobs finish first; it ends once they have.")
@JSON_OPTION
@click.pass_context
def release_cmd(ctx, lease, drain, as_json) -> None:
    _show(connect(ctx).lease_release(lease, drain), as_json)


@lease_group.command("keepalive")
@click.argument("lease")
@click.pass_context
def keepalive_cmd(ctx, lease) -> None:
    """Renew a lease until this command is stopped (three times per keepalive); exits non-zero
    as soon as the lease has ended. Run it beside a script: if the script dies with it, the
    lease expires by itself."""
    from ..leasing import RENEWALS_PER_KEEPALIVE

    api = connect(ctx)
    while True:
        info = api.lease_renew(lease)  # an ended lease: LeaseNotFound, reported as every error is
        time.sleep(info["keepalive"] / RENEWALS_PER_KEEPALIVE)
