"""Redis connections: clients, the errors worth retrying, and the one retry policy.

``redis+cluster://host:port`` (``rediss+cluster://`` for TLS) asks for a Redis Cluster:
any node of it, the client discovers the rest. ``redis+sentinel://h1:26379,h2:26379/NAME``
asks Sentinel for the master named NAME, and again after a failover (``SentinelURL``).
Code that must differ between a single Redis and a cluster goes through ``LuaScript`` and
``StreamReader`` here; everything else is the same commands on either client. The
embedded server for runs without ``REDIS_URL`` is in ``embedded_redis.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast
from urllib.parse import parse_qs, unquote, urlsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.asyncio.connection import DefaultParser
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript
from redis.typing import EncodableT, KeyT

from . import metrics
from .logs import Throttled

log = logging.getLogger(__name__)
T = TypeVar("T")

class PersistenceError(redis.ResponseError):
    """``MISCONF``: Redis cannot write its snapshot or append-only file (a full disk, a
    folder it may not write) and refuses every write until it can again."""


CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
SENTINEL_SCHEME = "redis+sentinel"
SENTINEL_OPTIONS = {"socket_connect_timeout": 3, "socket_timeout": 3}  # each Sentinel asked; the next if it fails
# Replies that are outages, not refusals, though redis-py derives them from ResponseError
# (so handlers of ResponseError, a refusal, re-raise these first): a cluster between a
# master's death and its replica's promotion (the slot down, moving, or its node
# unreachable); a Redis at its maxmemory with nothing it may evict, or one that cannot
# persist (its disk full), which refuse every write until they can again; and a replica,
# which refuses writes: a master demoted by a failover (Sentinel, a managed Redis) while
# its name still leads to it, until the connection is made again (``READONLY_RETRY``)
# to the promoted one.
TRANSIENT_RESPONSE_ERRORS = (
    redis.exceptions.ClusterError,  # ClusterDownError, MasterDownError
    redis.exceptions.TryAgainError,
    redis.exceptions.SlotNotCoveredError,
    redis.exceptions.OutOfMemoryError,
    PersistenceError,
    redis.exceptions.ReadOnlyError,
)
# Errors after which redis-py drops the connection and sends the command again on a new
# one (resolving the host name again): a replica's refusal means the master is elsewhere.
READONLY_RETRY = [redis.exceptions.ReadOnlyError]
# Errors after which a connection is worth retrying (Redis restarting, a cluster failing
# over, network blip, Redis out of memory).
TRANSIENT_ERRORS = (
    redis.ConnectionError, redis.TimeoutError, ConnectionError, TimeoutError, OSError, *TRANSIENT_RESPONSE_ERRORS
)
# Refused credentials or permissions: retrying cannot help. redis-py derives
# AuthenticationError from ConnectionError, so handlers re-raise these first.
ACCESS_ERRORS = (redis.AuthenticationError, redis.exceptions.NoPermissionError)


def _client_options(url: str, name: str) -> dict[str, Any]:
    options: dict[str, Any] = {
        "socket_connect_timeout": 3,
        "socket_timeout": 15,  # longer than any BLOCK we issue
        "health_check_interval": 10,
        "client_name": name,
    }
    if not url.startswith("unix:"):
        options["socket_keepalive"] = True  # TCP only
    return options


def is_cluster_url(url: str) -> bool:
    return urlsplit(url).scheme in CLUSTER_SCHEMES


@dataclass(frozen=True)
class SentinelURL:
    """``redis+sentinel://[user:password@]host[:port][,host[:port]...]/NAME[/DB]``: the
    Sentinels to ask (port 26379 unless given) for the master of the group NAME. The
    credentials are the master's; Sentinels are asked without any, unless the query says
    ``?sentinel_password=SECRET`` (Sentinels with a ``requirepass``, as Bitnami's chart
    sets them up: the master's password again, as a rule)."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None

    def sentinel_options(self) -> dict[str, Any]:
        """The connection options of the Sentinels themselves."""
        return {**SENTINEL_OPTIONS, **({"password": self.sentinel_password} if self.sentinel_password else {})}

    @classmethod
    def parse(cls, url: str) -> SentinelURL:
        """ValueError, in words, for what is wrong with ``url``."""
        parts = urlsplit(url)
        if parts.scheme != SENTINEL_SCHEME:
            raise ValueError(f"not a {SENTINEL_SCHEME}:// URL")
        credentials, _, hosts = parts.netloc.rpartition("@")
        username, _, password = credentials.partition(":") if credentials else ("", "", "")
        sentinels = [_sentinel_address(address) for address in hosts.split(",") if address]
        if not sentinels:
            raise ValueError("the URL names no Sentinel (host:port, comma-separated)")
        path = [unquote(p) for p in parts.path.split("/") if p]
        if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
            raise ValueError("the URL's path must be the master group's name, and a database number if not 0 "
                             "(redis+sentinel://host:26379/mymaster/0)")
        query = parse_qs(parts.query, keep_blank_values=True)
        if unknown := sorted(set(query) - {"sentinel_password"}):
            raise ValueError(f"unknown query parameter {unknown[0]!r} (only sentinel_password)")
        return cls(tuple(sentinels), path[0], int(path[1]) if len(path) == 2 else 0,
                   unquote(username) or None, unquote(password) or None,
                   query.get("sentinel_password", [""])[-1] or None)


class _Sentinel(Sentinel):
    """redis-py's Sentinel, saying in words what the Sentinels answered when none names
    the master (redis-py names each by its client's repr, a screenful): a refused access
    is an AuthenticationError (a missing or wrong ``sentinel_password``: retrying cannot
    help), anything else each Sentinel's address and answer."""

    async def discover_master(self, service_name: str) -> tuple[str, int]:
        try:
            return cast(tuple[str, int], await super().discover_master(service_name))
        except MasterNotFoundError:
            pass
        answers = []
        for sentinel in self.sentinels:
            options = sentinel.connection_pool.connection_kwargs
            where = f"{options.get('host')}:{options.get('port')}"
            try:
                masters = await sentinel.sentinel_masters()
            except ACCESS_ERRORS as exc:
                raise redis.AuthenticationError(
                    f"the Sentinel at {where} refused access ({exc}); give its password in the URL's sentinel_password"
                ) from None
            except (redis.RedisError, OSError) as exc:
                answers.append(f"{where}: {exc}")
                continue
            answers.append(f"{where}: {'no master' if service_name not in masters else 'its master is down'}")
        raise MasterNotFoundError(
            f"no Sentinel names a master {service_name!r} that is up ({'; '.join(answers)})")


def _node_url(url: str) -> str:
    """``redis+cluster://h:p`` -> ``redis://h:p``: the node redis-py starts discovery from."""
    scheme, rest = url.split("://", 1)
    return f"{scheme.removesuffix('+cluster')}://{rest}"


class _Parser(DefaultParser):  # type: ignore[misc,valid-type]  # a variable: the parser redis-py picked
    """Redis 6.2 reports a write refused inside a script as the script's own error
    (``Error running script ...: -OOM command not allowed when used memory >
    'maxmemory'``): read as the refusal it wraps, as Redis 7 reports it, so that a full
    Redis or a replica is an outage to wait out wherever a script writes. A master made a
    replica ends every blocking read with ``UNBLOCKED ... instance state changed``: the
    replica's refusal too, not a stream deleted under the read. ``MISCONF`` (Redis
    cannot persist), which redis-py has no class for, is a PersistenceError."""

    WRAPPED = {": -OOM ": redis.exceptions.OutOfMemoryError, ": -READONLY ": redis.exceptions.ReadOnlyError,
               "UNBLOCKED force unblock from blocking operation, instance state changed":
                   redis.exceptions.ReadOnlyError,
               ": -MISCONF ": PersistenceError}

    @classmethod
    def parse_error(cls, response: str) -> redis.ResponseError:
        error: redis.ResponseError = super().parse_error(response)
        if type(error) is redis.ResponseError:
            if response.startswith("MISCONF "):
                return PersistenceError(response.removeprefix("MISCONF "))
            for marker, refusal in cls.WRAPPED.items():
                if marker in response:
                    return refusal(response)
        return error


def _sentinel_address(text: str) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port``; 26379 unless a port is given."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        host, _, port = text.partition(":")
    if not host:
        raise ValueError(f"a Sentinel without a host: {text!r}")
    if not port:
        return host, 26379
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"a Sentinel's port must be a number from 1 to 65535, not {port!r}")
    return host, int(port)


def connect(url: str, name: str = "emotion-stream") -> aioredis.Redis:
    """An asyncio client (a ``RedisCluster`` for cluster URLs, the master's client for
    Sentinel URLs; typed as the common interface). Short internal retries; callers'
    loops own long outages."""
    from redis.asyncio.retry import Retry

    retry = Retry(ExponentialBackoff(cap=1.0, base=0.05), 3)
    if urlsplit(url).scheme == SENTINEL_SCHEME:
        where = SentinelURL.parse(url)
        # The master's connections ask the Sentinels where it is each time they connect,
        # and reconnect when it turns out a replica (READONLY, or a blocking read ended).
        sentinel = _Sentinel(where.sentinels, sentinel_kwargs=where.sentinel_options())
        master = sentinel.master_for(where.service, db=where.db, username=where.username, password=where.password,
                                     retry=retry, parser_class=_Parser, **_client_options(url, name))
        return cast(aioredis.Redis, master)
    if is_cluster_url(url):
        options = _client_options(url, name)
        options.pop("health_check_interval")  # per-node pools check on use
        cluster = RedisCluster.from_url(_node_url(url), retry=retry, **options)
        # A cluster client takes no parser_class; its nodes make their connections from
        # these (the startup nodes from their own copies), lazily, so set it before any.
        for kwargs in (cluster.connection_kwargs, *(node.connection_kwargs for node in cluster.startup_nodes)):
            kwargs["parser_class"] = _Parser
        return cast(aioredis.Redis, cluster)
    return aioredis.Redis.from_url(url, retry=retry, retry_on_error=READONLY_RETRY, parser_class=_Parser,
                                   **_client_options(url, name))


def is_cluster(client: object) -> bool:
    return isinstance(client, (RedisCluster, ClusterPipeline))


class LuaScript:
    """A Lua script for either client. One Redis: EVALSHA (redis-py's script object).
    A cluster: EVAL with the text, because a cluster pipeline cannot load a script
    beforehand and a replica promoted by a failover starts with an empty script cache;
    each script's keys share one hash tag, so EVAL runs on the one node of that slot."""

    def __init__(self, client: aioredis.Redis, text: str) -> None:
        self.text = text
        self.client = client
        self._script: AsyncScript | None = None if is_cluster(client) else client.register_script(text)

    async def __call__(self, keys: Sequence[KeyT], args: Sequence[EncodableT], client: Any = None) -> Any:
        """Run on ``client`` (a pipeline of the same client, say) or the client given."""
        if self._script is None:
            if isinstance(client, ClusterPipeline):
                # Queued, not awaited: awaiting a cluster pipeline re-initialises it.
                return client.eval(self.text, len(keys), *keys, *args)
            return await (client or self.client).eval(self.text, len(keys), *keys, *args)
        return await self._script(keys=keys, args=args, client=client)


async def write_confirmed(
    client: aioredis.Redis, key: str, write: Callable[[Any], Awaitable[object]],
    replicas: int, timeout_ms: int,
) -> tuple[Any, bool]:
    """Queue commands on ``key``'s slot with ``await write(pipe)``, then WAIT for
    ``replicas`` replicas to have them: (the last command's reply, confirmed). WAIT counts
    the writes of its own connection and has no key: on a cluster it goes to ``key``'s
    node, in the same per-node batch as the writes. (``write`` must not await the
    pipeline itself: awaiting a cluster pipeline starts it afresh.)"""
    pipe = client.pipeline(transaction=False)
    await write(pipe)
    if is_cluster(client):
        node = cast(RedisCluster, client).get_node_from_key(key)
        pipe.execute_command("WAIT", replicas, timeout_ms, target_nodes=node)
    else:
        pipe.execute_command("WAIT", replicas, timeout_ms)
    *replies, acked = await pipe.execute()
    return replies[-1], int(acked) >= replicas


StreamEntries = list[tuple[Any, dict[bytes, bytes] | None]]
# A cluster cannot block on streams of several slots in one command: they are polled,
# waiting between empty polls from POLL_MIN_S, doubling, up to POLL_MAX_S.
POLL_MIN_S = 0.002
POLL_MAX_S = 0.025
# Replies that mean the slot map is out of date (a failover, a resharding).
_MOVED = (redis.exceptions.MovedError, redis.exceptions.AskError, *TRANSIENT_ERRORS)


class StreamReader:
    """XREAD / XREADGROUP over many streams, on one Redis or a Redis Cluster.

    One Redis: one (blocking) command for all streams. A cluster: one command per stream
    (each its own slot), sent as one plain pipeline to each node, the nodes at once, and
    polled until ``block_ms`` passes. Plain per-node pipelines, not redis-py's cluster
    pipeline: that one spends ~0.3 ms of CPU a command on routing, against ~0.05 ms here,
    which decides what polling costs. The slot map comes from the cluster client and is
    refreshed when a node moved a slot or went away.
    """

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self.cluster = cast(RedisCluster, client) if is_cluster(client) else None
        self._nodes: dict[str, aioredis.Redis] = {}  # "host:port" -> plain client of that node
        self._stale = True

    async def read(
        self, streams: dict[str, str], *, count: int, block_ms: int | None = None,
        group: str | None = None, consumer: str | None = None,
    ) -> list[tuple[str, StreamEntries]]:
        """[(stream, [(id, fields), ...]), ...] for ``streams`` {name: last id}, waiting
        up to ``block_ms`` for anything. On a cluster, errors of some streams come back
        as an exception only when nothing was read: entries already handed to this
        consumer must not be dropped because another node failed (they would sit
        pending until reclaimed)."""
        if not streams:
            return []
        if self.cluster is None:
            ids = cast(dict[KeyT, Any], streams)
            reply: Any
            if group is not None:
                reply = await self.client.xreadgroup(group, consumer or "", ids, count=count, block=block_ms)
            else:
                reply = await self.client.xread(ids, count=count, block=block_ms)
            return [(as_text(name), entries) for name, entries in reply or []]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (block_ms or 0) / 1000
        wait = POLL_MIN_S
        while True:
            result, errors = await self._poll(streams, count, group, consumer)
            if result:
                return result
            if errors:
                raise errors[0]
            left = deadline - loop.time()
            if left <= 0:
                return []
            await asyncio.sleep(min(wait, left))
            wait = min(POLL_MAX_S, wait * 2)

    async def _poll(self, streams: dict[str, str], count: int, group: str | None,
                    consumer: str | None) -> tuple[list[tuple[str, StreamEntries]], list[Exception]]:
        assert self.cluster is not None
        if self._stale:
            await self._refresh()
        by_node: dict[str, list[str]] = {}
        for name in streams:
            node = self.cluster.get_node_from_key(name)
            if node is None:  # the slot's master is gone and no replica took over yet
                self._stale = True
                raise redis.exceptions.ClusterDownError(f"no node serves the slot of {name}")
            by_node.setdefault(node.name, []).append(name)

        async def node_read(node: str, names: list[str]) -> list[Any]:
            pipe = self._client_of(node).pipeline(transaction=False)
            for name in names:
                if group is not None:
                    pipe.xreadgroup(group, consumer or "", {name: streams[name]}, count=count)
                else:
                    pipe.xread({name: streams[name]}, count=count)
            return await pipe.execute(raise_on_error=False)

        # A node that fails (the whole pipeline, or one stream's command) must not lose
        # what the other nodes handed out: errors are collected, not raised here.
        replies = await asyncio.gather(*(node_read(n, names) for n, names in by_node.items()),
                                       return_exceptions=True)
        result: list[tuple[str, StreamEntries]] = []
        errors: list[Exception] = []
        for reply in replies:
            for one in reply if isinstance(reply, list) else [reply]:
                if isinstance(one, Exception):
                    errors.append(one)
                    self._stale = self._stale or isinstance(one, _MOVED)
                elif isinstance(one, BaseException):
                    raise one  # cancelled
                else:
                    result += [(as_text(name), entries) for name, entries in one or []]
        return result, errors

    def _client_of(self, node: str) -> aioredis.Redis:
        client = self._nodes.get(node)
        if client is None:
            assert self.cluster is not None
            found = self.cluster.get_node(node_name=node)
            if found is None:
                raise redis.ConnectionError(f"cluster node {node} is gone")
            pool = aioredis.ConnectionPool(connection_class=found.connection_class, **found.connection_kwargs)
            client = self._nodes[node] = aioredis.Redis(connection_pool=pool)
        return client

    async def _refresh(self) -> None:
        """Fetch the slot map again; close clients of nodes that are no longer there."""
        assert self.cluster is not None
        await self.cluster.nodes_manager.initialize()
        self._stale = False
        current = {node.name for node in self.cluster.get_nodes()}
        for name in [n for n in self._nodes if n not in current]:
            await self._nodes.pop(name).aclose()

    async def aclose(self) -> None:
        for client in self._nodes.values():
            await client.aclose()
        self._nodes.clear()


async def clock_ms(client: aioredis.Redis) -> int:
    """Redis' clock in milliseconds; on a cluster, the earliest of its masters' clocks:
    no stream entry written from now on can have an id below it (ids take the writing
    master's time, or later)."""
    if is_cluster(client):
        replies = await cast(RedisCluster, client).execute_command("TIME", target_nodes=RedisCluster.PRIMARIES)
        times = list(replies.values()) if isinstance(replies, dict) else [replies]
    else:
        times = [await client.time()]
    return min(int(seconds) * 1000 + int(micros) // 1000 for seconds, micros in times)


async def evicting_nodes(client: aioredis.Redis) -> dict[str, str] | None:
    """The Redis masters that may evict keys when full (a ``maxmemory`` and a
    ``maxmemory-policy`` other than ``noeviction``: a cache's settings, or a managed
    Redis' default), each with its policy; None when INFO is refused (an ACL without
    ``@dangerous``). Evicted keys vanish uncounted: a camera's frame stream and its
    consumer group, a lease, the tracker's state. Under ``noeviction`` a full Redis
    refuses writes instead, an outage every part waits out and counts."""
    try:
        if is_cluster(client):
            replies = await client.info("memory", target_nodes=RedisCluster.PRIMARIES)
        else:
            replies = {"redis": await client.info("memory")}
    except redis.exceptions.NoPermissionError:
        return None
    return {as_text(node): str(info.get("maxmemory_policy", "noeviction")) for node, info in replies.items()
            if int(info.get("maxmemory", 0)) > 0 and info.get("maxmemory_policy", "noeviction") != "noeviction"}


def as_text(value: bytes | str) -> str:
    """A name or id from a Redis reply (bytes, or str with decode_responses) as str."""
    return value.decode() if isinstance(value, bytes) else value


# A frame stream's entries from ARGV[1] (a range start: an id, or "(id" for after it) to
# its end, and its last entry's id: {last id or nil, count or nil (entries without frame
# numbers)}. Reading the entries to count them copies every JPEG among them (256 of 60 KB:
# 33 ms, in Lua 43 ms of Redis' time), so they are counted from the frame numbers of the
# first and last of them (three entries read). One ingest numbers its frames 0, 1, 2...
# (a frame it dropped leaves a gap, counted as one): while frames of an earlier ingest are in
# the stream too, the numbers from its oldest entry to its last fall short of its length,
# and the entries are counted one by one. KEYS: the frame stream.
FRAMES_FROM_LUA = """
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
if not last then return {false, 0} end
local first = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', 1)[1]
if not first then return {last[1], 0} end
local oldest = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
local function seq(entry)
  for i = 1, #entry[2], 2 do
    if entry[2][i] == 'seq' then return tonumber(entry[2][i + 1]) end
  end
end
local a, b, o = seq(first), seq(last), seq(oldest)
if not (a and b and o) then return {last[1], false} end
local length = redis.call('XLEN', KEYS[1])
if b - o + 1 >= length and b >= a then return {last[1], math.min(b - a + 1, length)} end
return {last[1], #redis.call('XRANGE', KEYS[1], ARGV[1], '+')}
"""


async def stream_range(client: aioredis.Redis, stream: str, *, after: str = "-", before: str = "+",
                       count: int | None = None, newest_first: bool = False) -> list[tuple[str, dict[bytes, bytes]]]:
    """Entries (id, fields) of a stream between two ids (``(id`` excludes it), oldest
    first, or newest first (``XREVRANGE``, ``before`` then ``after``)."""
    if newest_first:
        entries = await client.xrevrange(stream, max=before, min=after, count=count)
    else:
        entries = await client.xrange(stream, min=after, max=before, count=count)
    return [(as_text(entry_id), fields) for entry_id, fields in cast(StreamEntries, entries or []) if fields]


def connect_sync(url: str, name: str = "emotion-stream") -> redis.Redis:
    from redis.retry import Retry

    retry = Retry(ExponentialBackoff(cap=1.0, base=0.05), 3)
    if urlsplit(url).scheme == SENTINEL_SCHEME:
        from redis.sentinel import Sentinel as SyncSentinel

        where = SentinelURL.parse(url)
        master = SyncSentinel(where.sentinels, sentinel_kwargs=where.sentinel_options()).master_for(
            where.service, db=where.db, username=where.username, password=where.password, retry=retry,
            **_client_options(url, name))
        return cast(redis.Redis, master)
    return redis.Redis.from_url(url, retry=retry, retry_on_error=READONLY_RETRY, **_client_options(url, name))


class Backoff:
    """Exponential backoff with a cap, for reconnect loops: 0.1 s, 0.2 s, ... ``cap``."""

    def __init__(self, base: float = 0.1, cap: float = 5.0) -> None:
        self.base, self.cap, self.attempt = base, cap, 0

    def next_delay(self) -> float:
        delay = min(self.cap, self.base * 2.0**self.attempt)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0


def unwrap_cluster_error(exc: redis.exceptions.RedisClusterException) -> Exception:
    """redis-py reports a cluster it cannot reach as RedisClusterException with the real
    reason as its cause: refused access and outages are what they are underneath (one
    to stop on, the other to retry); anything else (a node that is no cluster) stays."""
    cause: BaseException = exc
    while cause.__cause__ is not None:
        cause = cause.__cause__
    if isinstance(cause, ACCESS_ERRORS + TRANSIENT_ERRORS):
        return cause
    return exc


async def retrying(
    operation: Callable[[], Awaitable[T]],
    *,
    what: str,
    component: str,
    stop: asyncio.Event | None = None,
    give_up: Callable[[int], bool] | None = None,
    backoff: Backoff | None = None,
) -> T | None:
    """The one retry policy for Redis outages: await ``operation()`` until it succeeds.

    Outages (TRANSIENT_ERRORS) are retried with capped exponential backoff, each counted
    in ``redis_errors_total{component}`` and logged at most every 10 s; refused access
    (ACCESS_ERRORS) is raised at once, since retrying cannot heal it. Returns None when
    ``stop`` is set first or ``give_up(attempts)`` says so (the caller decides what an
    unfinished operation means); redis-py's own Retry only covers one command's short
    blips, this covers restarts that take minutes.
    """
    backoff = backoff or Backoff(0.1, 5.0)
    throttled = Throttled(log)
    while stop is None or not stop.is_set():
        try:
            try:
                return await operation()
            except redis.exceptions.RedisClusterException as exc:
                raise unwrap_cluster_error(exc) from None
        except ACCESS_ERRORS:
            raise
        except TRANSIENT_ERRORS as exc:
            metrics.REDIS_ERRORS.labels(component).inc()
            if give_up is not None and give_up(backoff.attempt):
                return None
            delay = backoff.next_delay()
            throttled.warning(what, "%s: Redis %s failed (%s); retrying in %.1f s", component, what, exc, delay)
            if stop is None:
                await asyncio.sleep(delay)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
    return None
