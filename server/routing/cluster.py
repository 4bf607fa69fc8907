"""The nodes of one deployment, and the node each room lives on, kept in Redis (``--redis``).

A room's mix needs all its streams in one place, so each open room lives on exactly one node;
any node may be asked to join it and must find that node. What Redis holds (keys under
``spatialjam:``, or the ``--redis-prefix`` a deployment chose):

``nodes``
    The ids of the nodes that registered (a set; ids whose ``node:<id>`` expired are taken out
    as they are found gone), so that finding the nodes reads no other keys.
``node:<id>``
    JSON ``{"id", "url", "load", "rooms", "pid", "started"}``: the node's public signaling
    address (``ws://host:port/ws``), its measured tick load (the share of the 20 ms frame its
    rooms take, summed) and its number of open rooms. Written every :data:`HEARTBEAT_S` with a
    time to live of :data:`NODE_TTL_S`: a node that stops writing (crashed, cut off) is gone
    from Redis within that time.
``room:<name>``
    The id of the node the room lives on, refreshed with the node's heartbeat (same time to
    live). Taken with :meth:`Cluster.claim`, atomically: a room whose node is alive keeps its
    node; a room whose node has gone is taken over by the first node to claim it.
``state:<name>``
    The room's saved seats, stage and personal mixes (:class:`server.rooms.store.RedisRoomStore`),
    so the node that re-creates a room after its node died restores it.
``cluster-key``
    A random key, made by the first node, with which a node vouches for the client address of
    a connection it relays to another (:meth:`Cluster.vouch`): the receiving node counts the
    connection against that client's limits, not the relaying node's.

Nothing here runs on the room clock: the heartbeat is its own task, and the routing calls
(:meth:`Cluster.locate`, :meth:`Cluster.claim`, :meth:`Cluster.place`) happen when a client
joins, one or two Redis round trips on the event loop (a fraction of a millisecond on a LAN).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
import time
import uuid
from dataclasses import dataclass

import redis
import redis.asyncio as aioredis

log = logging.getLogger(__name__)

#: How often a node writes its registration and refreshes its rooms (seconds).
HEARTBEAT_S = 1.0
#: How long a registration lives without being refreshed: a dead node's rooms are free after it.
NODE_TTL_S = 3.0
DEFAULT_PREFIX = "spatialjam:"
#: How long a node's word for a relayed client holds (seconds; the nodes' clocks are assumed
#: within it of each other).
VOUCH_TTL_S = 30.0
#: Seconds a Redis call may take before the server gives up on it.
REDIS_TIMEOUT_S = 2.0
#: Reading a room's saved state as it opens (on the worker's event loop), at most.
LOAD_TIMEOUT_S = 0.5

# KEYS[1] room key; ARGV: node id, ttl ms, node key prefix. The room's node if alive, else us.
_CLAIM = """
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[1] and redis.call('EXISTS', ARGV[3] .. owner) == 1 then
  return owner
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ARGV[1]
"""
# KEYS: room keys; ARGV: node id, ttl ms. Keep our claims alive (and claim rooms nobody has);
# the positions (1-based) of rooms another node holds now.
_REFRESH = """
local lost = {}
for i, key in ipairs(KEYS) do
  local owner = redis.call('GET', key)
  if owner == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
  elseif not owner then
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
  else
    table.insert(lost, i)
  end
end
return lost
"""
# KEYS[1] room key; ARGV[1] node id: let go of a room only if it is still ours.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class ClusterError(Exception):
    """Redis cannot be reached or used; the message says which address and why."""


@dataclass(frozen=True)
class Node:
    """A node as it registered itself."""

    id: str
    url: str
    load: float = 0.0
    rooms: int = 0
    pid: int = 0
    started: float = 0.0

    @classmethod
    def from_json(cls, text: str | bytes) -> Node:
        data = json.loads(text)
        return cls(str(data["id"]), str(data["url"]), float(data.get("load", 0.0)),
                   int(data.get("rooms", 0)), int(data.get("pid", 0)),
                   float(data.get("started", 0.0)))

    def to_json(self) -> str:
        return json.dumps({"id": self.id, "url": self.url, "load": round(self.load, 4),
                           "rooms": self.rooms, "pid": self.pid, "started": self.started})


def redacted(url: str) -> str:
    """``url`` as scheme, host, port (or socket path) and database only: no user, password
    or query (``redis://u:pw@h:6379/0?password=x`` → ``redis://h:6379/0``)."""
    scheme, sep, _ = url.partition("://")
    if not sep:
        return "(not a URL)"
    try:
        parts = redis.connection.parse_url(url)
    except ValueError:
        return f"{scheme}://(unreadable)"
    where = parts.get("path") or f"{parts.get('host', 'localhost')}:{parts.get('port', 6379)}"
    return f"{scheme}://{where}/{parts.get('db', 0)}"


def check_redis_url(url: str) -> str:
    """``url`` if it is a Redis URL, else :class:`ClusterError` saying what one looks like."""
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ClusterError(f"--redis {url!r} is not a Redis URL: use redis://HOST:PORT[/DB] "
                           "(rediss:// for TLS, unix:///path/to/redis.sock)")
    try:
        redis.connection.parse_url(url)
    except ValueError as exc:
        raise ClusterError(f"--redis {redacted(url)!r} cannot be read: {exc}") from None
    return url


class Cluster:
    """This node's view of the deployment: its registration, its rooms, the other nodes.

    Parameters
    ----------
    url : str
        The Redis server, ``redis://host:port/db``.
    public_url : str
        Where clients and other nodes reach this node's signaling, ``ws://host:port/ws``.
    node_id : str, optional
        Unique per running node (default: a fresh UUID, so a restarted node is a new node).
    prefix : str
        Key prefix, to share one Redis between deployments.
    """

    def __init__(self, url: str, public_url: str, node_id: str | None = None,
                 prefix: str = DEFAULT_PREFIX, ttl_s: float = NODE_TTL_S,
                 heartbeat_s: float = HEARTBEAT_S) -> None:
        self.url = check_redis_url(url)
        self.public_url = public_url
        self.id = node_id or uuid.uuid4().hex[:12]
        self.prefix = prefix
        self.ttl_s = ttl_s
        self.heartbeat_s = heartbeat_s
        self.redis = aioredis.Redis.from_url(url, socket_timeout=REDIS_TIMEOUT_S,
                                             socket_connect_timeout=REDIS_TIMEOUT_S)
        self.started = time.time()
        #: Rooms this node holds: refreshed with each heartbeat.
        self.rooms: set[str] = set()
        #: What the heartbeat publishes: the measured tick load.
        self.load = 0.0
        self._claim = self.redis.register_script(_CLAIM)
        self._release = self.redis.register_script(_RELEASE)
        self._refresh = self.redis.register_script(_REFRESH)
        self._task: asyncio.Task | None = None
        self.heartbeats_failed = 0
        self._key = b""
        #: Rooms open here that another node took over (this node missed its heartbeats):
        #: joins for them are routed by Redis, not to this node's copy.
        self.lost: set[str] = set()

    @property
    def redis_display(self) -> str:
        """The Redis URL without its password, for logs and health."""
        return redacted(self.url)

    @property
    def _nodes_key(self) -> str:
        return f"{self.prefix}nodes"

    def _node_key(self, node_id: str) -> str:
        return f"{self.prefix}node:{node_id}"

    def _room_key(self, room: str) -> str:
        return f"{self.prefix}room:{room}"

    def me(self) -> Node:
        return Node(self.id, self.public_url, self.load, len(self.rooms), os.getpid(),
                    self.started)

    # lifetime ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Register now (raising :class:`ClusterError` if Redis cannot be used), then keep the
        registration and the rooms' claims fresh in the background."""
        try:
            await self.redis.set(f"{self.prefix}cluster-key", secrets.token_hex(32), nx=True)
            self._key = await self.redis.get(f"{self.prefix}cluster-key")
            await self._beat()
        except (redis.RedisError, OSError) as exc:
            raise ClusterError(f"cannot use Redis at {self.redis_display}: {exc}") from None
        self._task = asyncio.get_running_loop().create_task(self._heartbeat())
        log.info("cluster: node %s registered in Redis at %s as %s", self.id,
                 self.redis_display, self.public_url)

    async def stop(self) -> None:
        """Stop the heartbeat and leave: the registration and this node's claims go now."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(redis.RedisError, OSError):
            for room in list(self.rooms):
                await self._release(keys=[self._room_key(room)], args=[self.id])
            await self.redis.delete(self._node_key(self.id))
            await self.redis.srem(self._nodes_key, self.id)
        await self.redis.aclose()

    async def _beat(self) -> None:
        ttl_ms = int(self.ttl_s * 1000)
        # the key again each time: a Redis that restarted empty gets this node's back
        await self.redis.set(f"{self.prefix}cluster-key", self._key or secrets.token_hex(32),
                             nx=True)
        self._key = await self.redis.get(f"{self.prefix}cluster-key") or self._key
        await self.redis.set(self._node_key(self.id), self.me().to_json(), px=ttl_ms)
        await self.redis.sadd(self._nodes_key, self.id)
        rooms = sorted(self.rooms)
        if not rooms:
            return
        lost = await self._refresh(keys=[self._room_key(r) for r in rooms], args=[self.id, ttl_ms])
        for i in lost:
            room = rooms[int(i) - 1]
            self.rooms.discard(room)
            self.lost.add(room)
            log.warning("cluster: room %s is held by another node now (this node missed its "
                        "heartbeats): joins for it go there; its members here play on in this "
                        "node's copy until they join again", room)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            try:
                await self._beat()
            except (redis.RedisError, OSError) as exc:
                self.heartbeats_failed += 1
                if self.heartbeats_failed == 1 or self.heartbeats_failed % 30 == 0:
                    log.warning("cluster: cannot reach Redis at %s (%s; %d heartbeats missed); "
                                "other nodes will take this node's rooms over if it lasts %.0f s",
                                self.redis_display, exc, self.heartbeats_failed, self.ttl_s)

    # relayed connections -----------------------------------------------------------------------

    def _mac(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()[:32]

    def vouch(self, client_host: str) -> str:
        """The ``X-Spatialjam-Relayed-For`` value with which this node relays a connection of
        ``client_host`` to another node: ``HOST NODE TIME MAC`` (Unix seconds)."""
        said = f"{client_host} {self.id} {int(time.time())}"
        return f"{said} {self._mac(said)}"

    def vouched_host(self, header: str, now: float | None = None) -> str | None:
        """The client address a node of this deployment vouched for in the last
        :data:`VOUCH_TTL_S`, or None (not from one, or an old header played again)."""
        parts = header.split()
        if len(parts) != 4 or not self._key:
            return None
        host, node, at, mac = parts
        if not at.isdigit() or abs((time.time() if now is None else now) - int(at)) > VOUCH_TTL_S:
            return None
        return host if hmac.compare_digest(mac, self._mac(f"{host} {node} {at}")) else None

    # rooms -------------------------------------------------------------------------------------

    async def nodes(self) -> list[Node]:
        """Every registered (alive) node, this one included: the ids in ``nodes``, read in
        one MGET; ids whose registration expired are taken out of the set."""
        ids = sorted(member.decode() for member in await self.redis.smembers(self._nodes_key))
        if not ids:
            return []
        found, gone = [], []
        for node_id, raw in zip(ids, await self.redis.mget([self._node_key(i) for i in ids]),
                                strict=True):
            if raw is None:  # expired: that node is gone
                gone.append(node_id)
                continue
            with contextlib.suppress(ValueError, KeyError, TypeError):
                found.append(Node.from_json(raw))
        if gone:
            await self.redis.srem(self._nodes_key, *gone)
        return found

    async def node(self, node_id: str) -> Node | None:
        raw = await self.redis.get(self._node_key(node_id))
        if raw is None:
            return None
        try:
            return Node.from_json(raw)
        except (ValueError, KeyError, TypeError):
            return None

    async def locate(self, room: str) -> Node | None:
        """The alive node ``room`` lives on, or None (not open anywhere, or its node died)."""
        owner = await self.redis.get(self._room_key(room))
        if owner is None:
            return None
        owner = owner.decode()
        return self.me() if owner == self.id else await self.node(owner)

    async def claim(self, room: str) -> Node:
        """Take ``room`` for this node unless an alive node has it; the node it lives on.

        A room whose node's registration expired is taken over (atomically: of two nodes
        claiming at once, one gets it and the other is told which).
        """
        owner = await self._claim(keys=[self._room_key(room)],
                                  args=[self.id, int(self.ttl_s * 1000), self._node_key("")])
        owner = owner.decode() if isinstance(owner, bytes) else str(owner)
        if owner == self.id:
            self.rooms.add(room)
            return self.me()
        node = await self.node(owner)
        if node is not None:
            return node
        # its registration expired between the script and now (or cannot be read): ours now
        owner = await self._claim(keys=[self._room_key(room)],
                                  args=[self.id, int(self.ttl_s * 1000), self._node_key("")])
        if (owner.decode() if isinstance(owner, bytes) else str(owner)) == self.id:
            self.rooms.add(room)
            return self.me()
        raise ClusterError(f"room {room} is claimed by node {owner!r}, whose registration "
                           "cannot be read")

    async def hold(self, rooms: set[str]) -> None:
        """The rooms this node's workers hold now: claims of rooms gone are released, new
        ones are kept with the next heartbeat (not those another node took over: :attr:`lost`,
        forgotten once they close here)."""
        self.lost &= rooms
        for room in self.rooms - rooms:
            await self.release(room)
        self.rooms |= rooms - self.lost

    async def release(self, room: str) -> None:
        """``room`` closed here: forget it (if it is still ours)."""
        self.rooms.discard(room)
        await self._release(keys=[self._room_key(room)], args=[self.id])

    async def place(self, room: str) -> Node:
        """Where a join for ``room`` must go: its node if it is open somewhere alive, else the
        least-loaded node (by measured tick load; fewer rooms breaks ties, then this node).

        Only this node is claimed for here; another node claims the room itself when the join
        reaches it (:meth:`claim`), and answers with the room's node if one was faster.
        """
        found = await self.locate(room)
        if found is not None:
            return found
        candidates = await self.nodes() or [self.me()]
        best = min(candidates, key=lambda n: (n.load, n.rooms, n.id != self.id))
        if best.id == self.id:
            return await self.claim(room)
        return best
