"""The Redis fixture starts a real server, and an outage is real."""

from __future__ import annotations

import pytest


@pytest.mark.redis
def test_fixture_serves_and_restarts(private_redis) -> None:
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(private_redis.url)
    client.set("k", b"v")
    assert client.get("k") == b"v"
    private_redis.stop()
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(private_redis.url).ping()
    private_redis.start()
    assert redis.Redis.from_url(private_redis.url).ping()
