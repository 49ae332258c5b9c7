"""`conveyor port-forward` (and Executor/Client ``open_port``): a running job's TCP port reached
from the host through the agent, against the real engine: busybox httpd in the job, httpx on
the host.
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from conveyor import Client, Executor
from conveyor.errors import PolicyRefused
from helpers import eventually

WAIT = 90
SERVER = "mkdir /www && echo hello > /www/index.html && dd if=/dev/urandom of=/www/big bs=1024 count=2048 2>/dev/null " \
         "&& httpd -f -p 8080 -h /www"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _web_job(cli) -> str:
    """A job serving /www on its port 8080 (on the default network); its id once it answers."""
    job = cli.ok("submit", cli.image, "sh", "-c", SERVER).strip()
    cli.until(job, "Running")
    eventually("httpd answers in the job", lambda: cli.run(
        "exec", job, "wget", "-q", "-O-", "http://127.0.0.1:8080/index.html").stdout == b"hello\n")
    return job


def test_a_forwarded_http_server_is_reached_from_the_host(fresh_cli, docker_client):
    """A user must reach a web server inside a job from the host with any HTTP client, for
    several connections at once and a large body byte for byte, on loopback only (not on the
    machine's other addresses); a job with network none must be refused, saying why."""
    cli = fresh_cli
    job = _web_job(cli)
    digest = cli.ok("exec", job, "sha256sum", "/www/big").split()[0]
    port = _free_port()
    forward = cli.popen("port-forward", job, f"{port}:8080")
    try:
        forward.wait_for_line(f"Forwarding from 127.0.0.1:{port} -> 8080".encode(), timeout=WAIT)

        def fetch(path: str) -> httpx.Response:
            with httpx.Client(timeout=WAIT) as http:  # a client (a connection) each
                return http.get(f"http://127.0.0.1:{port}{path}")

        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(fetch, ["/index.html", "/big", "/index.html", "/nothing-here"]))
        assert [a.status_code for a in answers] == [200, 200, 200, 404]
        assert answers[0].text == answers[2].text == "hello\n"
        assert len(answers[1].content) == 2 << 20 and hashlib.sha256(answers[1].content).hexdigest() == digest
        # dockerd does not always record the gateway in the bridge's IPAM (seen on a fresh
        # machine); docker0 then holds the subnet's first address
        ipam = docker_client.networks.get("bridge").attrs["IPAM"]["Config"][0]
        gateway = ipam.get("Gateway") or str(next(ipaddress.ip_network(ipam["Subnet"]).hosts()))
        with pytest.raises(ConnectionRefusedError):  # the host's address on the engine's bridge
            socket.create_connection((gateway, port), timeout=5).close()
    finally:
        forward.kill()

    isolated = cli.submit(cli.image, "sleep", "300")  # --network none
    cli.until(isolated, "Running")
    proc = cli.run("port-forward", isolated, "8080")
    assert proc.returncode == 125
    assert f"cannot forward a port of job {isolated}: it runs with network none" in proc.stderr.decode()
    proc = cli.run("port-forward", job, "9")
    assert proc.returncode == 125 and "nothing answers on port 9 of the job" in proc.stderr.decode(), proc.stderr


def test_open_port_from_python_and_the_tokens_rule(fresh_cli, tmp_path):
    """The Python Client and the embedded Executor must reach a job's port as the CLI does, and
    a named token only when its policy says `port_forward: true` (the refusal names the rule
    and the token)."""
    cli = fresh_cli
    job = _web_job(cli)
    guest = cli.ok("token", "create", "guest").strip()
    policy = tmp_path / "web.yaml"
    policy.write_text("port_forward: true\nothers_jobs: control\n")  # the job is the owner's
    web = cli.ok("token", "create", "web", "--policy", str(policy)).strip()
    with pytest.raises(PolicyRefused) as refused:
        Client(cli.home, token=guest).open_port(job, 8080)
    assert (refused.value.rule, refused.value.token) == ("port_forward", "guest")
    assert _index_through(Client(cli.home, token=web).open_port(job, 8080)) == b"hello\n"
    with Executor(cli.home, supervise=False) as embedded:  # the same, in this process: a socket
        assert _index_through(embedded.open_port(job, 8080)) == b"hello\n"


def _index_through(conn) -> bytes:
    """GET /index.html over a connection to the job's httpd; the body of a 200 answer."""
    try:
        conn.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
        conn.shutdown(socket.SHUT_WR)
        answer = b""
        while data := conn.recv(4096):
            answer += data
    finally:
        conn.close()
    assert answer.startswith(b"HTTP/1.1 200 OK"), answer
    return answer.split(b"\r\n\r\n", 1)[1]
