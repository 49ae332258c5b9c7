"""Checks of the test infrastructure itself: the test image and the local registry."""

from __future__ import annotations

import json
import urllib.request

import docker.errors
import pytest


def test_image_runs(docker_client, test_image):
    out = docker_client.containers.run(
        test_image, ["sh", "-c", "echo ok; id -u app"], remove=True
    )
    assert out.decode().split() == ["ok", "1000"]


def test_image_layout(docker_client, test_image):
    script = (
        "stat -c %a /tmp; id -u nobody; id -g app; grep '^video:' /etc/group | cut -d: -f3; "
        "test -x /bin/busybox && echo busybox-ok; echo $PATH"
    )
    out = docker_client.containers.run(test_image, ["sh", "-c", script], remove=True)
    assert out.decode().split() == ["1777", "65534", "1000", "44", "busybox-ok", "/bin"]


def test_registry_push_pull_roundtrip(docker_client, test_image, registry):
    repo = f"{registry}/conveyor-infra"
    ref = f"{repo}:1"
    image = docker_client.images.get(test_image)
    assert image.tag(repo, tag="1")
    try:
        for line in docker_client.images.push(repo, tag="1", stream=True, decode=True):
            assert "error" not in line, line

        with urllib.request.urlopen(f"http://{registry}/v2/conveyor-infra/tags/list", timeout=5) as r:
            assert json.load(r)["tags"] == ["1"]

        docker_client.images.remove(ref)
        with pytest.raises(docker.errors.ImageNotFound):
            docker_client.images.get(ref)

        pulled = docker_client.images.pull(repo, tag="1")
        assert ref in pulled.tags
        assert pulled.id == image.id
    finally:
        try:
            docker_client.images.remove(ref)
        except docker.errors.NotFound:
            pass
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(ref)
