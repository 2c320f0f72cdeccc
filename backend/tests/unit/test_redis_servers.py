"""tests/redis_servers.py, the harness that starts Redis for the tests: a
cluster that cannot start leaves no node running, and gets another try on
other ports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import tests.redis_servers as servers
from tests.redis_servers import CannotStart, RedisCluster


class Node:
    """A node that starts, or refuses to (a port taken at the bind)."""

    def __init__(self, fails: bool) -> None:
        self.fails = fails
        self.running = False

    def start(self) -> Node:
        if self.fails:
            raise CannotStart("redis-server exited")
        self.running = True
        return self

    def stop(self) -> None:
        self.running = False


def test_a_cluster_that_cannot_start_stops_the_nodes_it_started() -> None:
    nodes = [Node(False), Node(False), Node(True), Node(False)]
    with pytest.raises(CannotStart):
        RedisCluster(nodes).start()  # type: ignore[arg-type]
    assert [n.running for n in nodes] == [False] * 4


def test_a_cluster_is_tried_again_on_other_ports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tries: list[list[int]] = []

    def start(self: RedisCluster) -> RedisCluster:
        tries.append([n.port for n in self.nodes])
        if len(tries) < 3:
            raise CannotStart("redis-server exited")
        return self

    monkeypatch.setattr(RedisCluster, "start", start)
    made: Any = servers.cluster(tmp_path, masters=3)
    assert len(tries) == 3 and made.nodes[0].port == tries[-1][0]
    assert len({port for ports in tries for port in ports}) == 9  # never reused
    tries.clear()  # two tries that both fail: the reason goes up
    with pytest.raises(CannotStart):
        servers.cluster(tmp_path, masters=3, attempts=2)
    assert len(tries) == 2
