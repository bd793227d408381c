"""Connection limits counted across every front end through Redis ([cluster] redis_url):
auth.max_connections_per_token, auth.max_connections_per_ip and cluster.max_connections.

Each counted connection is a member of a sorted set per limit, scored with the time it stops
counting unless renewed; every front end renews its own members every node_ttl_s / 3. A front end
that dies (kill -9, power) stops renewing, and its connections stop counting after node_ttl_s.
The local Gate still counts first (cheap, and what holds while Redis is away).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
from collections import defaultdict

from server.auth import Principal
from server.redis_link import RedisLink, RedisUnavailable

log = logging.getLogger(__name__)

PREFIX = "livecaption:connections"

# KEYS: the counting sets; ARGV[1] the member, ARGV[2] its time to live (s), then one limit per key.
# Returns 0 (counted in every set) or the position of the first set at its limit (counted in none).
ADMIT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if redis.call('ZCARD', key) >= tonumber(ARGV[2 + i]) then return i end
end
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now + tonumber(ARGV[2]), ARGV[1])
  redis.call('EXPIRE', key, math.ceil(tonumber(ARGV[2])) * 2)
end
return 0
"""

# KEYS[i] holds member ARGV[i + 1]: each is renewed for ARGV[1] more seconds (if still there).
RENEW = """
local clock = redis.call('TIME')
local until_ = tonumber(clock[1]) + tonumber(clock[2]) / 1000000 + tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, 'XX', until_, ARGV[i + 1])
  redis.call('EXPIRE', key, math.ceil(tonumber(ARGV[1])) * 2)
end
"""


class ClusterConnections:
    def __init__(
        self, link: RedisLink, node: str, per_token: int, per_ip: int, total: int, auth_on: bool, ttl_s: float
    ) -> None:
        """`per_token` counts only with auth on (with it off every caller is the same anonymous
        token); `total` counts live-audio sockets, as server.max_connections does per front end."""
        self.link, self.node, self.ttl_s = link, node, ttl_s
        self.per_token = per_token if auth_on else 0
        self.per_ip, self.total = per_ip, total
        self._numbers = itertools.count(1)
        # (token name, address, is a stream) -> its counted members, with the sets each is in
        self._members: dict[tuple[str, str, bool], list[tuple[str, tuple[str, ...]]]] = defaultdict(list)
        self._renewer: asyncio.Task | None = None

    @property
    def counting(self) -> bool:
        return bool(self.per_token or self.per_ip or self.total)

    def start(self) -> None:
        if self.counting:
            self._renewer = asyncio.create_task(self._renew_loop(), name="cluster connection counts")

    def close(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()

    async def admit(self, principal: Principal, address: str, stream: bool) -> str | None:
        """Count a new connection in across the cluster; the reason it is refused, or None.
        While Redis is away only this front end's own counts apply (the Gate's)."""
        wanted = [
            (f"{PREFIX}:token:{principal.name}", self.per_token, "max_connections_per_token", "for this token"),
            (f"{PREFIX}:address:{address}", self.per_ip, "max_connections_per_ip", f"from {address}"),
            (f"{PREFIX}:all", self.total if stream else 0, "cluster.max_connections", "on all front ends"),
        ]
        wanted = [entry for entry in wanted if entry[1]]
        if not wanted:
            return None
        member = f"{self.node}:{next(self._numbers)}"
        keys = tuple(key for key, *_ in wanted)
        command = ("EVAL", ADMIT, len(keys), *keys, member, self.ttl_s, *(limit for _, limit, *_ in wanted))
        try:
            (full,) = await self.link.read(command)
        except RedisUnavailable as exc:
            log.warning("connection counted on this front end only: %s", exc)
            return None
        if full:
            _, limit, setting, where = wanted[full - 1]
            return f"too many connections {where} across the cluster ({setting} = {limit})"
        self._members[(principal.name, address, stream)].append((member, keys))
        return None

    def release(self, principal: Principal, address: str, stream: bool) -> None:
        members = self._members.get((principal.name, address, stream))
        if not members:
            return  # counted here only (Redis was away when it came in)
        member, keys = members.pop()
        if not members:
            del self._members[(principal.name, address, stream)]
        # if this is lost (Redis away long enough to drop it), the member expires unrenewed
        self.link.write(*(("ZREM", key, member) for key in keys))

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self.ttl_s / 3)
            pairs = [(key, member) for held in self._members.values() for member, keys in held for key in keys]
            if pairs and self.link.healthy:
                ttl = max(1, math.ceil(self.ttl_s))
                self.link.write(("EVAL", RENEW, len(pairs), *(k for k, _ in pairs), ttl, *(m for _, m in pairs)))
