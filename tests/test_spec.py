"""Unit tests (no engine) for JobSpec and the pure Docker mappings.

Covers the docker-CLI spellings a user types (units, durations, -v/--mount, -p, --ulimit,
--restart, --gpus), file loading, digests, and that every bad value raises InvalidSpec
naming the exact field path, the value and a hint.
"""

from __future__ import annotations

import grp
import json
import math

import pytest
from docker.types import HostConfig

from conveyor import InvalidSpec, JobSpec, JobState, Substate
from conveyor.backends.base import LABEL_EXECUTOR, LABEL_JOB, LABEL_MANAGED
from conveyor.backends.docker import container_config, conveyor_labels, gpu_host_config, host_config
from conveyor.backends.docker.mapping import JOB_LOG_CONFIG
from conveyor.spec import GpuRequest, GpuVendor, Mount, PortMapping, PullPolicy, Ulimit, parse_bytes, parse_duration

IMAGE = "busybox"
MiB = 1 << 20
GiB = 1 << 30


def spec(**kw) -> JobSpec:
    kw.setdefault("image", IMAGE)
    return JobSpec(**kw)


# --------------------------------------------------------------------------- units


@pytest.mark.parametrize(
    "text, expected",
    [
        ("512m", 512 * MiB),
        ("512M", 512 * MiB),
        ("512mb", 512 * MiB),
        ("2g", 2 * GiB),
        ("1.5Gi", int(1.5 * GiB)),
        ("1.5GiB", int(1.5 * GiB)),
        ("64k", 64 * 1024),
        ("1t", 1 << 40),
        ("1024", 1024),
        ("1024b", 1024),
        (1024, 1024),
        (2048.0, 2048),
        ("-1", -1),
        (-1, -1),
        (" 8m ", 8 * MiB),
    ],
)
def test_parse_bytes(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["12x", "m", "", "1.5.2g", "10i", "1e3", "lots", 1.5, "5 m b"])
def test_parse_bytes_rejects(text):
    with pytest.raises(ValueError, match="512m"):
        parse_bytes(text)


@pytest.mark.parametrize(
    "text, expected",
    [
        (90, 90.0),
        ("90", 90.0),
        (2.5, 2.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("1h30m15s", 5415.0),
        ("500ms", 0.5),
        ("1.5s", 1.5),
        ("2d", 172800.0),
        ("1M", 60.0),  # case-insensitive, like the other units
    ],
)
def test_parse_duration(text, expected):
    assert parse_duration(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["ten", "", "5m3", "1h 30m", "-5s", "30x", "s", "nan", "inf", float("nan"), float("inf")])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError, match="1h30m"):
        parse_duration(text)


def test_memory_units_in_spec():
    s = spec(resources={"memory": "512m", "memory_swap": "1g"})
    assert s.resources.memory == 512 * MiB
    assert s.resources.memory_swap == GiB
    assert spec(resources={"memory": "2g"}).resources.memory == 2 * GiB
    assert spec(resources={"memory": "1.5Gi"}).resources.memory == int(1.5 * GiB)
    assert spec(resources={"memory": str(6 * MiB)}).resources.memory == 6 * MiB  # plain bytes, the minimum
    assert spec(resources={"memory": "64m", "memory_swap": -1}).resources.memory_swap == -1
    assert spec(resources={"memory": "64m", "memory_swap": "-1"}).resources.memory_swap == -1
    assert spec(resources={"memory": "64m", "memory_swap": "64m"}).resources.memory_swap == 64 * MiB
    assert spec(shm_size=1024).shm_size == 1024
    assert spec(shm_size="64m").shm_size == 64 * MiB


def test_durations_in_spec():
    assert spec(timeout=90).timeout == 90.0
    assert spec(timeout="30s").timeout == 30.0
    assert spec(timeout="5m").timeout == 300.0
    assert spec(timeout="1h30m").timeout == 5400.0
    assert spec(timeout="500ms").timeout == 0.5
    assert spec().timeout is None
    assert spec().stop_grace == 10.0
    assert spec(stop_grace=0).stop_grace == 0.0
    assert spec(stop_grace="2m").stop_grace == 120.0


def test_cpus_pids():
    s = spec(resources={"cpus": 1.5, "pids_limit": 100})
    assert s.resources.cpus == 1.5 and s.resources.pids_limit == 100
    assert spec(resources={"cpus": "0.25"}).resources.cpus == 0.25
    assert spec(resources={"pids_limit": -1}).resources.pids_limit == -1


# --------------------------------------------------------------------------- mounts


def test_mount_short_syntaxes():
    s = spec(mounts=["/srv/data:/data:ro", "cache:/cache", "/anon", "/rw:/rw:rw", "/z:/z:ro,Z"])
    bind, named, anon, rw, z = s.mounts
    assert (bind.type, bind.source, bind.target, bind.read_only) == ("bind", "/srv/data", "/data", True)
    assert (named.type, named.source, named.target, named.read_only) == ("volume", "cache", "/cache", False)
    assert (anon.type, anon.source, anon.target) == ("volume", None, "/anon")
    assert rw.read_only is False
    assert z.read_only is True


def test_mount_long_syntax():
    s = spec(
        mounts=[
            "type=tmpfs,target=/scratch,tmpfs-size=64m",
            "type=bind,source=/srv,target=/srv,readonly",
            "type=volume,src=vol1,dst=/v,ro=true",
            "type=bind,source=/a,destination=/b,readonly=false",
        ]
    )
    tmpfs, bind, vol, bind_rw = s.mounts
    assert (tmpfs.type, tmpfs.source, tmpfs.target, tmpfs.size) == ("tmpfs", None, "/scratch", 64 * MiB)
    assert (bind.type, bind.source, bind.target, bind.read_only) == ("bind", "/srv", "/srv", True)
    assert (vol.type, vol.source, vol.target, vol.read_only) == ("volume", "vol1", "/v", True)
    assert bind_rw.read_only is False


def test_mount_mapping_form():
    s = spec(mounts=[{"type": "tmpfs", "target": "/t", "size": "1g"}, {"type": "bind", "source": "/x", "target": "/y", "read_only": True}])
    assert s.mounts[0].size == GiB
    assert s.mounts[1] == Mount(type="bind", source="/x", target="/y", read_only=True)


# --------------------------------------------------------------------------- ports, ulimits, restart, gpus


@pytest.mark.parametrize(
    "text, expected",
    [
        (80, (80, "tcp", None, None)),
        ("80", (80, "tcp", None, None)),
        ("8080:80", (80, "tcp", 8080, None)),
        ("127.0.0.1:8080:80/udp", (80, "udp", 8080, "127.0.0.1")),
        ("127.0.0.1::53", (53, "tcp", None, "127.0.0.1")),
        ("53/udp", (53, "udp", None, None)),
        ("[::1]:8443:443", (443, "tcp", 8443, "::1")),
        ("9000:9000/sctp", (9000, "sctp", 9000, None)),
    ],
)
def test_ports(text, expected):
    p = spec(ports=[text]).ports[0]
    assert (p.container_port, p.protocol, p.host_port, p.host_ip) == expected
    assert PortMapping.parse(text) == p


def test_ulimits_list_and_dict():
    s = spec(ulimits=["nofile=1024:2048", "memlock=-1", "core=0"])
    assert [(u.name, u.soft, u.hard) for u in s.ulimits] == [("nofile", 1024, 2048), ("memlock", -1, -1), ("core", 0, 0)]
    d = spec(ulimits={"nofile": "1024:2048", "memlock": -1, "nproc": {"soft": 10, "hard": 20}})
    assert [(u.name, u.soft, u.hard) for u in d.ulimits] == [("nofile", 1024, 2048), ("memlock", -1, -1), ("nproc", 10, 20)]
    m = spec(ulimits=[{"name": "stack", "soft": 8192, "hard": -1}])
    assert m.ulimits == [Ulimit(name="stack", soft=8192, hard=-1)]


def test_restart():
    assert spec().restart.name == "no"
    r = spec(restart="on-failure:3").restart
    assert (r.name, r.max_retries) == ("on-failure", 3)
    assert spec(restart="on-failure").restart.max_retries == 0
    assert spec(restart="unless-stopped").restart.name == "unless-stopped"
    assert spec(restart={"name": "always"}).restart.name == "always"


@pytest.mark.parametrize(
    "value, vendor, count, ids",
    [
        ("all", GpuVendor.NVIDIA, None, []),
        ("2", GpuVendor.NVIDIA, 2, []),
        (2, GpuVendor.NVIDIA, 2, []),
        ("device=0,1", GpuVendor.NVIDIA, None, ["0", "1"]),
        ("'device=0,1'", GpuVendor.NVIDIA, None, ["0", "1"]),
        ({"vendor": "amd"}, GpuVendor.AMD, None, []),
        ({"vendor": "intel", "count": 1}, GpuVendor.INTEL, 1, []),
        ({"vendor": "amd", "device_ids": ["1"]}, GpuVendor.AMD, None, ["1"]),
    ],
)
def test_gpus(value, vendor, count, ids):
    g = spec(resources={"gpus": value}).resources.gpus
    assert (g.vendor, g.count, g.device_ids) == (vendor, count, ids)
    assert g.all == (count is None and not ids)


def test_gpu_parse_with_vendor():
    g = GpuRequest.parse("device=0", vendor="intel")
    assert g.vendor is GpuVendor.INTEL and g.device_ids == ["0"]


# --------------------------------------------------------------------------- command, env, labels


def test_command_string_is_split_like_a_shell():
    s = spec(command="sh -c 'echo hello world; exit 3'")
    assert s.command == ["sh", "-c", "echo hello world; exit 3"]
    assert spec(command=["sh", "-c", "echo 'quoted'"]).command == ["sh", "-c", "echo 'quoted'"]


def test_full_command_and_entrypoint():
    assert spec().full_command is None
    assert spec(command=["echo"], args=["a", "b c"]).full_command == ["echo", "a", "b c"]
    assert spec(args="x 'y z'").full_command == ["x", "y z"]
    assert spec(entrypoint="/bin/sh -c").entrypoint == ["/bin/sh", "-c"]
    assert spec(entrypoint=[]).entrypoint == []


def test_env_and_labels_as_pairs():
    s = spec(env=["A=1", "B=x=y", "EMPTY="], labels=["team=ml", "tier="])
    assert s.env == {"A": "1", "B": "x=y", "EMPTY": ""}
    assert s.labels == {"team": "ml", "tier": ""}
    m = spec(env={"N": 5, "NONE": None}, labels={"k": "v"})
    assert m.env == {"N": "5", "NONE": ""}
    assert m.labels == {"k": "v"}


def test_defaults():
    s = spec()
    assert s.pull is PullPolicy.IF_MISSING
    assert spec(pull="missing").pull is PullPolicy.IF_MISSING  # docker's spelling
    assert spec(pull="never").pull is PullPolicy.NEVER
    assert s.mounts == [] and s.ports == [] and s.ulimits == [] and s.env == {} and s.labels == {}
    assert s.resources.gpus is None and not s.auto_remove and not s.privileged


@pytest.mark.parametrize(
    "image",
    ["busybox", "busybox:1.36", "library/busybox", "host:5000/a/b:tag", "localhost/x_y.z-w:v1.2-rc",
     "ghcr.io/org/img@sha256:" + "a" * 64, "sha256:" + "b" * 64, "c" * 12],
)
def test_good_image_refs(image):
    assert JobSpec(image=image).image == image


# --------------------------------------------------------------------------- files


def test_load_yaml(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text(
        "image: busybox\n"
        "command: sh -c 'echo hi'\n"
        "env: [A=1, B=2]\n"
        "labels: {team: ml}\n"
        "mounts:\n  - /srv/data:/data:ro\n  - type=tmpfs,target=/scratch,tmpfs-size=16m\n"
        "ports: ['8080:80']\n"
        "ulimits: {nofile: '1024:2048'}\n"
        "restart: on-failure:3\n"
        "timeout: 1h30m\n"
        "resources:\n  cpus: 1.5\n  memory: 512m\n  gpus: all\n"
    )
    s = JobSpec.from_file(path)
    assert s.command == ["sh", "-c", "echo hi"]
    assert s.env == {"A": "1", "B": "2"} and s.labels == {"team": "ml"}
    assert s.mounts[0].read_only and s.mounts[1].size == 16 * MiB
    assert s.ports[0].host_port == 8080
    assert s.ulimits[0] == Ulimit(name="nofile", soft=1024, hard=2048)
    assert (s.restart.name, s.restart.max_retries) == ("on-failure", 3)
    assert s.timeout == 5400.0
    assert s.resources.cpus == 1.5 and s.resources.memory == 512 * MiB and s.resources.gpus.all
    assert JobSpec.from_file(str(path)) == s


def test_load_json(tmp_path):
    path = tmp_path / "job.json"
    path.write_text(json.dumps({"image": "busybox", "command": ["echo", "hi"], "resources": {"memory": "64m"}, "stop_grace": "5s"}))
    s = JobSpec.from_file(path)
    assert s.command == ["echo", "hi"] and s.resources.memory == 64 * MiB and s.stop_grace == 5.0


def test_json_roundtrip():
    s = spec(
        command="echo hi", env=["A=1"], mounts=["/a:/b:ro", "type=tmpfs,target=/t,tmpfs-size=1m"],
        ports=["127.0.0.1:8080:80/udp"], ulimits=["nofile=1024:2048"], restart="on-failure:2",
        timeout="5m", pull="never", resources={"cpus": 2, "memory": "1g", "memory_swap": -1, "gpus": {"vendor": "amd", "count": 1}},
    )
    back = JobSpec.from_json(s.to_json())
    assert back == s
    assert back.digest() == s.digest()


# --------------------------------------------------------------------------- digest


def test_digest_is_stable_across_spellings():
    a = spec(command="echo hi", env=["A=1", "B=2"], resources={"memory": "512m"}, timeout="1h30m", ulimits=["nofile=1024:2048"])
    b = spec(command=["echo", "hi"], env={"B": "2", "A": "1"}, resources={"memory": 512 * MiB}, timeout=5400,
             ulimits=[{"name": "nofile", "soft": 1024, "hard": 2048}])
    assert a.digest() == b.digest()
    assert a.digest() == a.digest()
    assert a.digest().startswith("sha256:") and len(a.digest()) == len("sha256:") + 64


def test_digest_changes_with_content():
    base = spec(command=["echo", "hi"])
    assert base.digest() != spec(command=["echo", "ho"]).digest()
    assert base.digest() != spec(command=["echo", "hi"], resources={"memory": "64m"}).digest()
    assert base.digest() != spec(command=["echo", "hi"], labels={"a": "b"}).digest()


# --------------------------------------------------------------------------- invalid input

# (kwargs, exact field path, text of the value in the message, text of the hint in the message)
INVALID = [
    pytest.param(dict(image="Busybox:!!"), "image", "Busybox:!!", "image reference", id="bad-image-ref"),
    pytest.param(dict(image="busy box"), "image", "busy box", "image reference", id="image-with-space"),
    pytest.param(dict(image=""), "image", "''", "image reference", id="empty-image"),
    pytest.param(dict(comand=["x"]), "comand", "['x']", "unknown field", id="unknown-field"),
    pytest.param(dict(resources={"memroy": "1g"}), "resources.memroy", "1g", "unknown field", id="unknown-nested-field"),
    pytest.param(dict(labels={"conveyor.job": "x"}), "labels", "conveyor.job", "conveyor.", id="reserved-label"),
    pytest.param(dict(labels=["conveyor.managed=false"]), "labels", "conveyor.managed", "not start with", id="reserved-label-list"),
    pytest.param(dict(workdir="work"), "workdir", "work", "absolute", id="relative-workdir"),
    pytest.param(dict(user="bad user"), "user", "bad user", "UID[:GID]", id="bad-user"),
    pytest.param(dict(user="1:2:3"), "user", "1:2:3", "UID[:GID]", id="bad-user-colons"),
    pytest.param(dict(hostname="-bad"), "hostname", "-bad", "letters, digits", id="bad-hostname"),
    pytest.param(dict(hostname="a_b"), "hostname", "a_b", "letters, digits", id="hostname-underscore"),
    pytest.param(dict(hostname="x", network="host"), "hostname", "'x'", "network 'host'", id="hostname-with-host-net"),
    pytest.param(dict(name="-x"), "name", "-x", "names start with", id="bad-name"),
    pytest.param(dict(resources={"memory": "5m"}), "resources.memory", str(5 * MiB), "at least 6m", id="memory-below-6m"),
    pytest.param(dict(resources={"memory": "12x"}), "resources.memory", "12x", "512m", id="memory-bad-unit"),
    pytest.param(dict(resources={"memory": "128m", "memory_swap": "64m"}), "resources.memory_swap", str(64 * MiB), ">= memory", id="swap-below-memory"),
    pytest.param(dict(resources={"memory_swap": "64m"}), "resources.memory_swap", str(64 * MiB), "needs memory", id="swap-without-memory"),
    pytest.param(dict(resources={"memory": "64m", "memory_swap": "-2"}), "resources.memory_swap", "-2", "512m", id="swap-minus-two"),
    pytest.param(dict(resources={"cpus": 0}), "resources.cpus", "0", "greater than 0", id="cpus-zero"),
    pytest.param(dict(resources={"cpus": 5000}), "resources.cpus", "5000", "4096", id="cpus-too-many"),
    pytest.param(dict(resources={"pids_limit": 0}), "resources.pids_limit", "0", "positive", id="pids-zero"),
    pytest.param(dict(resources={"pids_limit": -5}), "resources.pids_limit", "-5", "positive", id="pids-negative"),
    pytest.param(dict(resources={"gpus": {"count": 1, "device_ids": ["0"]}}), "resources.gpus.count", "1", "not both", id="gpu-count-and-ids"),
    pytest.param(dict(resources={"gpus": {"vendor": "matrox"}}), "resources.gpus.vendor", "matrox", "nvidia", id="gpu-unknown-vendor"),
    pytest.param(dict(resources={"gpus": "some"}), "resources.gpus", "some", "device=ID", id="gpu-bad-syntax"),
    pytest.param(dict(resources={"gpus": 0}), "resources.gpus.count", "0", "greater than or equal to 1", id="gpu-count-zero"),
    pytest.param(dict(resources={"gpus": "device="}), "resources.gpus.device_ids", "['']", "non-empty", id="gpu-empty-device-id"),
    pytest.param(dict(ulimits=["nofiles=1:2"]), "ulimits[0].name", "nofiles", "nofile", id="bad-ulimit-name"),
    pytest.param(dict(ulimits=["core=0", "nofile=2048:1024"]), "ulimits[1].soft", "2048", "exceeds the hard limit 1024", id="ulimit-soft-gt-hard"),
    pytest.param(dict(ulimits=[{"name": "nofile", "soft": 4, "hard": 2}]), "ulimits[0].soft", "4", "exceeds", id="ulimit-soft-gt-hard-mapping"),
    pytest.param(dict(ulimits=["nofile=-1:1024"]), "ulimits[0].soft", "-1", "exceeds", id="ulimit-unlimited-soft-finite-hard"),
    pytest.param(dict(ulimits=[{"name": "nofile", "soft": 1, "hard": -5}]), "ulimits[0].hard", "-5", "-1 for unlimited", id="ulimit-bad-hard"),
    pytest.param(dict(ulimits={"core": 0, "nofile": "2048:1024"}), "ulimits[1].soft", "2048", "exceeds", id="ulimit-dict-soft-gt-hard"),
    pytest.param(dict(ulimits={"nofiles": 5}), "ulimits[0].name", "nofiles", "unknown ulimit", id="ulimit-dict-bad-name"),
    pytest.param(dict(ulimits={"nofile": [1, 2]}), "ulimits[0]", "[1, 2]", "Ulimit", id="ulimit-dict-bad-value"),
    pytest.param(dict(ulimits=["nofile"]), "ulimits[0]", "nofile", "NAME=SOFT[:HARD]", id="ulimit-no-value"),
    pytest.param(dict(ulimits=["nofile=a:b"]), "ulimits[0]", "nofile=a:b", "integers", id="ulimit-not-int"),
    pytest.param(dict(network="none", ports=["8080:80"]), "ports", "[80]", "network 'none'", id="ports-with-network-none"),
    pytest.param(dict(network="host", ports=["80"]), "ports", "[80]", "network 'host'", id="ports-with-network-host"),
    pytest.param(dict(ports=["80:abc"]), "ports[0]", "80:abc", "CONTAINER_PORT", id="bad-port-syntax"),
    pytest.param(dict(ports=["80", "70000"]), "ports[1].container_port", "70000", "65535", id="port-out-of-range"),
    pytest.param(dict(auto_remove=True, restart="always"), "auto_remove", "True", "restart policy 'always'", id="auto-remove-with-restart"),
    pytest.param(dict(restart="sometimes"), "restart.name", "sometimes", "on-failure", id="bad-restart-name"),
    pytest.param(dict(restart="always:3"), "restart.max_retries", "3", "on-failure policy only", id="retries-without-on-failure"),
    pytest.param(dict(restart="on-failure:x"), "restart", "on-failure:x", "MAX_RETRIES", id="bad-restart-retries"),
    pytest.param(dict(mounts=[{"type": "tmpfs", "source": "/x", "target": "/t"}]), "mounts[0].source", "/x", "takes no source", id="tmpfs-with-source"),
    pytest.param(dict(mounts=["type=tmpfs,source=/x,target=/t"]), "mounts[0].source", "/x", "takes no source", id="tmpfs-with-source-long"),
    pytest.param(dict(mounts=["/a:/data", "vol:/data/"]), "mounts", "/data", "same target", id="duplicate-mount-targets"),
    pytest.param(dict(mounts=["/a:/b", "/c:rel"]), "mounts[1].target", "rel", "absolute", id="relative-mount-target"),
    pytest.param(dict(mounts=["/a:/"]), "mounts[0].target", "'/'", "not '/'", id="mount-on-root"),
    pytest.param(dict(mounts=["/a:/b:rx"]), "mounts[0]", "/a:/b:rx", "ro or rw", id="bad-mount-option"),
    pytest.param(dict(mounts=["a:b:c:d"]), "mounts[0]", "a:b:c:d", "SOURCE:TARGET", id="bad-mount-syntax"),
    pytest.param(dict(mounts=["type=bind,source=rel,target=/b"]), "mounts[0].source", "rel", "absolute host path", id="relative-bind-source"),
    pytest.param(dict(mounts=["./rel:/b"]), "mounts[0].source", "./rel", "absolute host path", id="relative-bind-source-short"),
    pytest.param(dict(mounts=[{"type": "bind", "source": "/a", "target": "/b", "size": "1m"}]), "mounts[0].size", str(MiB), "tmpfs mounts only", id="size-on-bind"),
    pytest.param(dict(mounts=["type=tmpfs,target=/t,mode=1777"]), "mounts[0]", "mode=1777", "unknown --mount key", id="bad-long-mount-key"),
    pytest.param(dict(mounts=[{"type": "nfs", "target": "/t"}]), "mounts[0].type", "nfs", "bind", id="bad-mount-type"),
    pytest.param(dict(timeout="ten"), "timeout", "ten", "1h30m", id="bad-timeout"),
    pytest.param(dict(timeout=0), "timeout", "0", "positive", id="zero-timeout"),
    pytest.param(dict(timeout="nan"), "timeout", "nan", "1h30m", id="nan-timeout"),
    pytest.param(dict(stop_grace=-1), "stop_grace", "-1", "zero or more", id="negative-stop-grace"),
    pytest.param(dict(stop_grace="-5s"), "stop_grace", "-5s", "1h30m", id="negative-stop-grace-duration"),
    pytest.param(dict(pull="sometimes"), "pull", "sometimes", "if-missing", id="bad-pull-policy"),
    pytest.param(dict(image="sha256:" + "a" * 64, pull="always"), "pull", "always", "cannot be pulled", id="pull-always-image-id"),
    pytest.param(dict(env=["NOEQ"]), "env", "NOEQ", "KEY=VALUE", id="env-without-equals"),
    pytest.param(dict(env={"A=B": "1"}), "env", "A=B", "without '='", id="env-key-with-equals"),
    pytest.param(dict(shm_size=0), "shm_size", "0", "positive", id="zero-shm"),
    pytest.param(dict(ipc_mode="bogus"), "ipc_mode", "bogus", "shareable", id="bad-ipc-mode"),
    pytest.param(dict(uts_mode="container:abc123"), "uts_mode", "container:abc123", "host", id="uts-container"),
    pytest.param(dict(network="bad net"), "network", "bad net", "docker network", id="bad-network"),
    pytest.param(dict(command="echo 'unclosed"), "command", "echo 'unclosed", "closing quotation", id="unbalanced-quote"),
    pytest.param(dict(command=5), "command", "5", "list", id="command-not-list"),
]


@pytest.mark.parametrize("kwargs, path, value_text, hint_text", INVALID)
def test_invalid(kwargs, path, value_text, hint_text):
    with pytest.raises(InvalidSpec) as info:
        spec(**kwargs)
    err = info.value
    assert err.problems, err
    assert err.problems[0][0] == path, err.problems
    message = str(err)
    assert message.startswith("invalid job spec: ")
    assert value_text in message, message
    assert hint_text in message, message
    assert isinstance(err, ValueError)  # callers catching ValueError still catch it


def test_missing_image():
    with pytest.raises(InvalidSpec) as info:
        JobSpec(command=["echo"])
    assert info.value.problems[0][0] == "image"
    assert "required" in str(info.value)


def test_all_problems_reported_at_once():
    with pytest.raises(InvalidSpec) as info:
        spec(workdir="rel", user="a b", timeout="x")
    assert {p[0] for p in info.value.problems} == {"workdir", "user", "timeout"}


def test_model_validate_raises_invalid_spec():
    with pytest.raises(InvalidSpec) as info:
        JobSpec.model_validate({"image": "busybox", "resources": {"cpus": -1}})
    assert info.value.problems[0][0] == "resources.cpus"
    with pytest.raises(InvalidSpec) as info:
        JobSpec.from_json('{"image": "busybox", "ports": ["x"]}')
    assert info.value.problems[0][0] == "ports[0]"


def test_assignment_is_validated_and_rejected_cleanly():
    s = spec(auto_remove=True)
    with pytest.raises(InvalidSpec) as info:
        s.timeout = "soon"
    assert info.value.problems[0][0] == "timeout"
    with pytest.raises(InvalidSpec) as info:
        s.restart = "always"
    assert info.value.problems[0][0] == "auto_remove"
    assert s.restart.name == "no"  # a rejected assignment leaves the spec unchanged and valid
    s.timeout = "2m"
    assert s.timeout == 120.0


def test_file_unreadable(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(InvalidSpec) as info:
        JobSpec.from_file(missing)
    assert info.value.problems[0][0] == "file"
    assert str(missing) in str(info.value) and "cannot read" in str(info.value)
    with pytest.raises(InvalidSpec) as info:
        JobSpec.from_file(tmp_path)  # a directory
    assert info.value.problems[0][0] == "file" and "cannot read" in str(info.value)


def test_file_invalid_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("image: [unclosed\ncommand: {\n")
    with pytest.raises(InvalidSpec) as info:
        JobSpec.from_file(path)
    assert info.value.problems[0][0] == "file"
    assert str(path) in str(info.value) and "not valid YAML" in str(info.value)


@pytest.mark.parametrize("text", ["- image: busybox\n", "just a string\n", "", "42\n", "[1, 2]"])
def test_file_not_a_mapping(tmp_path, text):
    path = tmp_path / "list.yaml"
    path.write_text(text)
    with pytest.raises(InvalidSpec) as info:
        JobSpec.from_file(path)
    assert info.value.problems[0][0] == "file"
    assert "mapping" in str(info.value)


def test_file_with_bad_field_names_the_field(tmp_path):
    path = tmp_path / "job.json"
    path.write_text(json.dumps({"image": "busybox", "mounts": [{"type": "bind", "source": "/a", "target": "rel"}]}))
    with pytest.raises(InvalidSpec) as info:
        JobSpec.from_file(path)
    assert info.value.problems[0][0] == "mounts[0].target"


# --------------------------------------------------------------------------- container_config


def test_container_config_mapping():
    s = spec(
        command="sh -c 'sleep 1'", args=["x"], entrypoint=["/bin/tini", "--"], env=["A=1", "B=2"], workdir="/work",
        user="1000:1000", hostname="box", labels={"team": "ml"}, tty=True, stdin_open=True, ports=["8080:80", "53/udp"],
    )
    labels = conveyor_labels("exec1", "job1", "named")
    cfg = container_config(s, labels)
    assert cfg["image"] == IMAGE
    assert cfg["command"] == ["sh", "-c", "sleep 1", "x"]
    assert cfg["entrypoint"] == ["/bin/tini", "--"]
    assert cfg["environment"] == ["A=1", "B=2"]
    assert cfg["working_dir"] == "/work"
    assert cfg["user"] == "1000:1000"
    assert cfg["hostname"] == "box"
    assert cfg["labels"] == {"team": "ml", LABEL_MANAGED: "true", LABEL_EXECUTOR: "exec1", LABEL_JOB: "job1", "conveyor.name": "named"}
    assert cfg["tty"] is True and cfg["stdin_open"] is True
    assert cfg["ports"] == [(80, "tcp"), (53, "udp")]


def test_container_config_defaults():
    cfg = container_config(spec(), conveyor_labels("e"))
    assert cfg["command"] is None and cfg["entrypoint"] is None
    assert cfg["user"] == "" and cfg["environment"] == [] and cfg["ports"] is None
    assert cfg["labels"] == {LABEL_MANAGED: "true", LABEL_EXECUTOR: "e"}


def test_empty_entrypoint_clears_the_images():
    assert container_config(spec(entrypoint=[]), {})["entrypoint"] == [""]
    assert container_config(spec(entrypoint=""), {})["entrypoint"] == [""]


# --------------------------------------------------------------------------- host_config


def test_host_config_mapping():
    s = spec(
        mounts=["/srv:/data:ro", "vol:/cache", "/anon", "type=tmpfs,target=/scratch,tmpfs-size=64m"],
        ports=["80", "8080:80", "127.0.0.1:8080:80/udp", "127.0.0.1::53"],
        ulimits=["nofile=1024:2048", "memlock=-1"], restart="on-failure:3", shm_size="128m",
        ipc_mode="host", uts_mode="host", pid_mode="host", privileged=True,
        resources={"cpus": 1.5, "memory": "64m", "memory_swap": "128m", "pids_limit": 50},
    )
    hc = host_config(s)
    assert hc["nano_cpus"] == 1_500_000_000
    assert hc["mem_limit"] == 64 * MiB and hc["memswap_limit"] == 128 * MiB
    assert hc["pids_limit"] == 50
    assert hc["shm_size"] == 128 * MiB
    assert hc["ipc_mode"] == hc["uts_mode"] == hc["pid_mode"] == "host"
    assert hc["privileged"] is True
    assert hc["network_mode"] == "bridge"
    assert hc["restart_policy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    assert [dict(u) for u in hc["ulimits"]] == [
        {"Name": "nofile", "Soft": 1024, "Hard": 2048},
        {"Name": "memlock", "Soft": -1, "Hard": -1},
    ]
    assert [dict(m) for m in hc["mounts"]] == [
        {"Target": "/data", "Source": "/srv", "Type": "bind", "ReadOnly": True},
        {"Target": "/cache", "Source": "vol", "Type": "volume", "ReadOnly": False},
        {"Target": "/anon", "Source": None, "Type": "volume", "ReadOnly": False},
        {"Target": "/scratch", "Source": None, "Type": "tmpfs", "ReadOnly": False, "TmpfsOptions": {"SizeBytes": 64 * MiB}},
    ]
    # What the Engine API receives for the port bindings, via the SDK's own conversion.
    api = HostConfig(version="1.41", port_bindings=hc["port_bindings"])
    assert api["PortBindings"] == {
        "80/tcp": [{"HostIp": "", "HostPort": ""}, {"HostIp": "", "HostPort": "8080"}],
        "80/udp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}],
        "53/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}],
    }


@pytest.mark.parametrize("cpus, nano", [(0.1, 100_000_000), (0.3, 300_000_000), (1, 1_000_000_000), (2.3, 2_300_000_000), (4.35, 4_350_000_000)])
def test_nano_cpus_exact(cpus, nano):
    assert host_config(spec(resources={"cpus": cpus}))["nano_cpus"] == nano


def test_host_config_minimal():
    hc = host_config(spec())
    assert hc == {"network_mode": "bridge", "privileged": False, "log_config": JOB_LOG_CONFIG}
    assert "restart_policy" not in hc and "ulimits" not in hc and "mem_limit" not in hc


def test_host_config_unlimited_swap_and_named_network():
    hc = host_config(spec(network="jobs-net", resources={"memory": "64m", "memory_swap": -1}))
    assert hc["memswap_limit"] == -1
    assert hc["network_mode"] == "jobs-net"
    assert host_config(spec(network="none"))["network_mode"] == "none"


@pytest.mark.parametrize("kw", [dict(auto_remove=True), dict(auto_remove=True, restart="no"), dict()])
def test_host_config_never_auto_removes(kw):
    hc = host_config(spec(**kw))
    assert "auto_remove" not in hc
    assert "AutoRemove" not in HostConfig(version="1.41", **hc)


# --------------------------------------------------------------------------- GPUs


def _gpus(**kw) -> GpuRequest:
    return GpuRequest(**kw)


def _video_group() -> str:
    try:
        return str(grp.getgrnam("video").gr_gid)
    except KeyError:
        return "video"


@pytest.mark.parametrize(
    "kw, count, ids",
    [(dict(), -1, []), (dict(count=2), 2, []), (dict(device_ids=["0", "1"]), 0, ["0", "1"]), (dict(device_ids=["GPU-3f2a"]), 0, ["GPU-3f2a"])],
)
def test_nvidia_device_request(kw, count, ids):
    cfg = gpu_host_config(_gpus(**kw))
    assert set(cfg) == {"device_requests"}
    (req,) = cfg["device_requests"]
    assert req["Driver"] == "nvidia"
    assert req["Count"] == count
    assert req["DeviceIDs"] == ids
    assert req["Capabilities"] == [["gpu"]]


def test_nvidia_via_host_config():
    hc = host_config(spec(resources={"gpus": "all"}))
    assert hc["device_requests"][0]["Count"] == -1
    assert "devices" not in hc


def test_amd_all():
    cfg = gpu_host_config(_gpus(vendor="amd"))
    assert cfg["devices"] == ["/dev/kfd:/dev/kfd:rwm", "/dev/dri:/dev/dri:rwm"]
    assert _video_group() in cfg["group_add"]
    assert "device_requests" not in cfg


def test_amd_device_id():
    cfg = gpu_host_config(_gpus(vendor="amd", device_ids=["1"]))
    assert cfg["devices"] == ["/dev/kfd:/dev/kfd:rwm", "/dev/dri/renderD129:/dev/dri/renderD129:rwm"]
    cfg = gpu_host_config(_gpus(vendor="amd", device_ids=["0", "/dev/dri/renderD130"]))
    assert cfg["devices"][1:] == ["/dev/dri/renderD128:/dev/dri/renderD128:rwm", "/dev/dri/renderD130:/dev/dri/renderD130:rwm"]


def test_amd_bad_device_id():
    with pytest.raises(InvalidSpec) as info:
        gpu_host_config(_gpus(vendor="amd", device_ids=["GPU-xyz"]))
    assert info.value.problems[0][0] == "resources.gpus.device_ids"
    assert "GPU-xyz" in str(info.value) and "renderD" in str(info.value)


def test_intel_all_has_no_kfd():
    cfg = gpu_host_config(_gpus(vendor="intel"))
    assert cfg == {"devices": ["/dev/dri:/dev/dri:rwm"]}
    assert not any("kfd" in d for d in cfg["devices"])


def test_intel_device_id():
    assert gpu_host_config(_gpus(vendor="intel", device_ids=["0"])) == {"devices": ["/dev/dri/renderD128:/dev/dri/renderD128:rwm"]}


@pytest.fixture
def fake_dri(tmp_path):
    for name in ("renderD128", "renderD129", "renderD130", "card0", "card1"):
        (tmp_path / name).touch()
    return tmp_path


@pytest.mark.parametrize("vendor", ["amd", "intel"])
def test_count_picks_render_nodes(fake_dri, vendor):
    cfg = gpu_host_config(_gpus(vendor=vendor, count=2), dri_root=str(fake_dri))
    nodes = [f"{fake_dri}/renderD128", f"{fake_dri}/renderD129"]
    expected = [f"{n}:{n}:rwm" for n in nodes]
    if vendor == "amd":
        assert cfg["devices"] == ["/dev/kfd:/dev/kfd:rwm", *expected]
        assert _video_group() in cfg["group_add"]
    else:
        assert cfg == {"devices": expected}


@pytest.mark.parametrize("vendor", ["amd", "intel"])
def test_count_larger_than_render_nodes(fake_dri, vendor):
    with pytest.raises(InvalidSpec) as info:
        gpu_host_config(_gpus(vendor=vendor, count=4), dri_root=str(fake_dri))
    assert info.value.problems[0][0] == "resources.gpus.count"
    message = str(info.value)
    assert "4" in message and "3" in message and str(fake_dri) in message and "all" in message


def test_count_with_no_render_nodes(tmp_path):
    with pytest.raises(InvalidSpec) as info:
        gpu_host_config(_gpus(vendor="amd", count=1), dri_root=str(tmp_path / "absent"))
    assert info.value.problems[0][0] == "resources.gpus.count"


def test_gpu_request_defaults_to_nvidia():
    assert _gpus().vendor is GpuVendor.NVIDIA
    assert math.isclose(spec(resources={"cpus": 1}).resources.cpus, 1.0)


# --------------------------------------------------------------------------- scheduling fields (issue 4)


def test_scheduling_fields_parse():
    s = spec(priority=10, after=["abc", "def:any", {"job": "123", "condition": "ok"}], start_deadline="5m",
             retries=2, retry_backoff="30s")
    assert s.priority == 10
    assert [(d.job, d.condition) for d in s.after] == [("abc", "ok"), ("def", "any"), ("123", "ok")]
    assert (s.start_deadline, s.retries, s.retry_backoff) == (300.0, 2, 30.0)
    assert spec(after="abc:ok").after[0].job == "abc"  # one dependency may be given as a string
    assert JobSpec.from_json(s.to_json()) == s
    assert spec().to_json() == '{"image":"busybox"}'  # defaults stay out of the stored spec


@pytest.mark.parametrize(
    "kw, field, hint",
    [
        ({"priority": 1001}, "priority", "less than or equal to 1000"),
        ({"priority": "high"}, "priority", "integer"),
        ({"after": ["abc:sometimes"]}, "after[0]", "ID:any"),
        ({"after": [":ok"]}, "after[0]", "use ID"),
        ({"start_deadline": 0}, "start_deadline", "positive"),
        ({"start_deadline": "soon"}, "start_deadline", "duration"),
        ({"retries": -1}, "retries", "greater than or equal to 0"),
        ({"retries": 101}, "retries", "less than or equal to 100"),
        ({"retry_backoff": -5}, "retry_backoff", "zero or more"),
    ],
)
def test_bad_scheduling_fields_name_the_field(kw, field, hint):
    with pytest.raises(InvalidSpec) as err:
        spec(**kw)
    (problem,) = err.value.problems
    assert problem[0] == field and hint in problem[2], problem


def test_digest_leaves_out_fields_at_their_defaults():
    # A spec that does not use a field has the digest it had before the field existed:
    # a digest-keyed resubmit after an upgrade still finds its first job.
    plain = spec(command=["echo", "hi"])
    assert plain.digest() == spec(command=["echo", "hi"], read_only=False, init=False, stop_grace=10).digest()
    assert plain.digest() != spec(command=["echo", "hi"], read_only=True).digest()


def test_host_config_read_only_root_and_init():
    hc = host_config(spec(read_only=True, init=True))
    assert hc["read_only"] is True and hc["init"] is True


# ----------------------------------------------------------------------------- the backend field


def test_a_backend_is_named_alone_or_with_options_validated_against_that_backend():
    assert JobSpec(backend="process", command=["true"]).backend_name == "process"
    gvisor = spec(backend={"name": "docker", "options": {"runtime": "runsc"}})
    assert (gvisor.backend_name, gvisor.backend.options) == ("docker", {"runtime": "runsc"})
    engine_only = spec(backend={"options": {"runtime": "runsc"}})  # `--runtime runsc` alone
    assert engine_only.backend_name is None and engine_only.backend.options_for("docker").runtime == "runsc"
    # options without a name suit some container engine; at submit they must suit the node's
    on_swarm = spec(backend={"options": {"constraints": "node.role==worker"}})
    assert on_swarm.backend.options == {"constraints": ["node.role==worker"]}
    assert on_swarm.backend.options_for("swarm").constraints == ["node.role==worker"]
    with pytest.raises(InvalidSpec) as err:
        on_swarm.backend.options_for("docker")
    assert err.value.problems[0][0] == "options.constraints" and "the docker backend's options" in err.value.problems[0][2]
    # options left at their defaults are not kept: they would change the digest
    assert spec(backend={"name": "docker", "options": {"security_opt": []}}).backend.options == {}


@pytest.mark.parametrize(
    "kw, field, hint",
    [
        ({"backend": "kubernetes"}, "backend.name", "unknown backend; use one of docker, podman, swarm, slurm, process"),
        ({"backend": {"name": "docker", "options": {"nice": 5}}}, "backend.options.nice", "runtime, cgroup_parent, security_opt"),
        ({"backend": {"name": "docker", "options": {"runtime": "run sc"}}}, "backend.options.runtime", "conveyor machine"),
        ({"backend": {"name": "process", "options": {"nice": 40}}, "image": None}, "backend.options.nice", "less than or equal to 19"),
        ({"backend": {"name": "process", "options": {"umask": "999"}}, "image": None}, "backend.options.umask", "pattern"),
        ({"backend": "process"}, "image", "leave the image out"),
        ({"backend": {"name": "swarm", "options": {"constraints": ["pool=gpu"]}}}, "backend.options.constraints", "ATTRIBUTE==VALUE"),
        ({"backend": {"name": "swarm", "options": {"preferences": ["zone"]}}}, "backend.options.preferences", "spread=ATTRIBUTE"),
        ({"image": None}, "image", "choose backend process"),
        ({"backend": {"options": {"colour": "blue"}}}, "backend.options.colour",
         "a container engine's options: runtime, cgroup_parent, security_opt, constraints, preferences"),
    ],
)
def test_bad_backend_fields_name_the_field_and_the_fix(kw, field, hint):
    fields = {"image": "busybox", "command": ["true"], **kw}
    with pytest.raises(InvalidSpec) as err:
        JobSpec(**fields)
    (problem,) = err.value.problems
    assert problem[0] == field and hint in problem[2], problem


def test_a_process_job_needs_a_command():
    with pytest.raises(InvalidSpec, match="command"):
        JobSpec(backend="process")


def test_cli_flags_make_the_backend_field():
    from conveyor.cli.jobspec import build_spec

    process = build_spec("echo", ("hi",), {"backend": "process", "backend_opt": ("nice=5",)})
    assert process == {"backend": {"name": "process", "options": {"nice": "5"}}, "command": ["echo", "hi"]}
    assert JobSpec(**process).backend.options == {"nice": 5}
    runsc = build_spec("busybox", ("true",), {"runtime": "runsc", "security_opt": ("no-new-privileges",)})
    assert runsc["backend"] == {"options": {"runtime": "runsc", "security_opt": ["no-new-privileges"]}}


def test_a_run_that_died_without_an_exit_code_is_lost_and_one_that_never_started_is_start_failed():
    """classify: what the engine saw -> final state. A dead run with no exit code (its node or
    supervisor died) is container_lost with the engine's words, not 'exited with code None'."""
    from conveyor.backends.base import ContainerStatus
    from conveyor.runtime.finisher import classify

    def seen(**kw):
        return ContainerStatus(**{"id": "x", "status": "exited", "exit_code": 0, "oom_killed": False,
                                  "started_at": 1.0, "finished_at": 2.0, **kw})

    assert classify(seen(status="dead", exit_code=None, error="node n3 is down"), None) == (
        JobState.FAILED, Substate.CONTAINER_LOST, "node n3 is down")
    assert classify(seen(exit_code=127, error="starting container failed: no such file", start_failed=True), None) == (
        JobState.FAILED, Substate.START_FAILED, "starting container failed: no such file")
    assert classify(seen(exit_code=137, oom_killed=True), None)[1] == Substate.OOM_KILLED
    assert classify(seen(exit_code=3), None) == (JobState.FAILED, Substate.EXITED, "exited with code 3")
