"""What `Queue` and `AsyncQueue` share beyond `_core`: connecting (single
server or cluster), registering the scripts, and turning redis-py's errors
into spool's (never showing the password)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import redis

from . import _core as c
from .errors import InvalidJob, RedisUnavailable, SpoolError


class QueueBase:
    """Connection and error handling; the subclass picks the redis-py flavour."""

    def __init__(
        self,
        url: str | None,
        name: str,
        *,
        max_payload_bytes: int,
        connect_timeout: float,
        timeout: float,
        single: Any,
        cluster: Any,
        node: Any,
        sentinel: Any = None,
        client: Any = None,
    ) -> None:
        self.keys = c.Keys(name)
        self.name = name
        # A client passed in stays the caller's: `close` leaves it open.
        self._owned = client is None
        if client is not None:
            kw = getattr(getattr(client, "connection_pool", None), "connection_kwargs", None) or {}
            if kw.get("decode_responses"):
                raise InvalidJob(
                    "client",
                    "a client with decode_responses=True returns text where spool "
                    "reads bytes: pass one without it",
                )
            self.addr = f"{kw.get('host', 'redis')}:{kw.get('port', 6379)}/{kw.get('db', 0)}"
            self._password = kw.get("password")
            url = None
        elif url is None:
            raise InvalidJob("url", "give a Redis URL, or an existing client as client=")
        else:
            self.addr = c.display_addr(url)
            self._password = _password_of(url)
        self.max_payload_bytes = max_payload_bytes
        # A blocking read waits at most half the socket timeout (and 2 s),
        # so it always answers before the socket gives up on it.
        self._block_cap_ms = max(1, min(2000, int(timeout * 500)))
        self._redis: Any
        if client is not None:
            self._redis = client
        elif url is None:
            raise InvalidJob("url", "give a Redis URL, or an existing client as client=")
        elif c.is_sentinel(url):
            # The master the sentinels name, asked again on every reconnect
            # (redis-py's SentinelConnectionPool).
            su = c.sentinel_url(url)
            if sentinel is None:
                raise InvalidJob("url", "this client has no Sentinel support")
            finder = sentinel(
                su.sentinels,
                socket_connect_timeout=connect_timeout,
                socket_timeout=timeout,
            )
            self._password = su.password
            self._redis = finder.master_for(
                su.master,
                db=su.db,
                username=su.username,
                password=su.password,
                ssl=su.tls,
                socket_connect_timeout=connect_timeout,
                socket_timeout=timeout,
            )
        elif c.is_cluster(url):
            nodes, scheme, password = c.cluster_nodes(url)
            self._redis = cluster(
                startup_nodes=[node(h, p) for h, p in nodes],
                password=password,
                ssl=scheme == "rediss",
                socket_connect_timeout=connect_timeout,
                socket_timeout=timeout,
            )
        else:
            self._redis = single.from_url(
                url, socket_connect_timeout=connect_timeout, socket_timeout=timeout
            )
        self._enqueue = self._redis.register_script(c.script("enqueue.lua"))
        self._cancel = self._redis.register_script(c.script("cancel.lua"))
        self._dead = self._redis.register_script(c.script("dead.lua"))
        self._pause = self._redis.register_script(c.script("pause.lua"))
        self._watch = self._redis.register_script(c.script("watch.lua"))
        self._flow = self._redis.register_script(c.script("flow.lua"))
        # When the queue was last added to the queue index (never yet).
        self._registered = -float("inf")
        # Worker protocols already warned about.
        self._protocols_seen: set[int] = set()

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as e:
            raise RedisUnavailable(self.addr, _scrub(str(e), self._password)) from None
        except redis.exceptions.ResponseError as e:
            msg = _scrub(str(e), self._password)
            if "spool: invalid" in msg or "spool: expected" in msg or "must be new jobs" in msg:
                raise InvalidJob("job", msg.split("spool: ", 1)[-1]) from None
            raise SpoolError(f"Redis refused a command: {msg}") from None
        except redis.exceptions.RedisError as e:
            raise SpoolError(_scrub(str(e), self._password)) from None

    def _entries(
        self, payloads: Sequence[c.Payload | c.BulkJob], options: c.JobOptions | None
    ) -> list[list[tuple[bytes, list[Any]]]]:
        """The script batches for `enqueue_many`, every job checked first.
        A `BulkJob` carries its own options; the rest share `options`."""
        opts = options or c.JobOptions()
        sharing = sum(1 for p in payloads if not isinstance(p, c.BulkJob))
        if sharing > 1 and opts.job_id is not None:
            raise InvalidJob("job_id", "one id cannot name several jobs")
        if sharing > 1 and opts.dedup_key is not None:
            raise InvalidJob(
                "dedup_key",
                "one dedup key cannot name several jobs (they would be one job): "
                "give each its own in a BulkJob",
            )
        entries = []
        for p in payloads:
            payload, o = (p.payload, p.options or opts) if isinstance(p, c.BulkJob) else (p, opts)
            # `args()` per job: it draws each job's own id.
            entries.append((c.encode_payload(payload, self.max_payload_bytes), o.args()))
        return c.chunks(entries)


def _password_of(url: str) -> str | None:
    try:
        return urlsplit(url.split(",")[0]).password
    except ValueError:
        return None


def _scrub(msg: str, password: str | None) -> str:
    return msg.replace(password, "***") if password else msg
