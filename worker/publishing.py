"""Writing a batch's outcome to Redis: events, results, dead letters - each atomic with its ACK.

Delivery from the consumer group is at-least-once: a worker that stalls past the claim
timeout can see its entries reclaimed and processed again elsewhere. Each frame's
outputs are therefore written by a Lua script that first XACKs the entry and only writes
if that ACK removed it from the pending list. Whichever worker acks first publishes;
the other's copy is discarded. Each frame's events appear exactly once.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import redis
import redis.asyncio as aioredis
from redis.typing import EncodableT

from emotion_stream import keys, metrics
from emotion_stream.keys import Stat
from emotion_stream.redis_conn import TRANSIENT_ERRORS, LuaScript

log = logging.getLogger(__name__)

RESULTS_TTL_S = 7 * 24 * 3600  # a batch job abandoned by its collector does not linger forever
# The tracked-cameras set is global (another slot): cameras are added to it beside the
# scripts, again at this interval, so a set lost with a Redis restart fills up again.
ANNOUNCE_S = 5.0

# Every key is the camera's (one hash tag, one cluster slot).
# KEYS: frames stream, output stream, stats hash, then the results stream when ARGV[4]
#       is set, then the frame-record stream when ARGV[7] is
# ARGV: group, entry id, output maxlen, result json or '', results ttl, stats field or '',
#       frame record json or '', frame-record stream maxlen, payload...
_PREAMBLE = """
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
if ARGV[6] ~= '' then redis.call('HINCRBY', KEYS[3], ARGV[6], 1) end
local k = 4
if ARGV[4] ~= '' then
  redis.call('XADD', KEYS[k], '*', 'result', ARGV[4])
  redis.call('EXPIRE', KEYS[k], ARGV[5])
  k = k + 1
end
if ARGV[7] ~= '' then
  redis.call('XADD', KEYS[k], 'MAXLEN', '~', ARGV[8], '*', 'frame', ARGV[7])
end
"""

# payload: event JSON documents; each goes to the events stream and its pub/sub channel.
_PUBLISH = _PREAMBLE + """
for i = 9, #ARGV do
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'event', ARGV[i])
  redis.call('PUBLISH', KEYS[2], ARGV[i])
end
return 1
"""

# payload: field/value pairs of the dead-letter entry.
_DEAD_LETTER = _PREAMBLE + """
if #ARGV > 8 then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', unpack(ARGV, 9))
end
return 1
"""


@dataclass(slots=True)
class Outcome:
    """What to write for one consumed entry."""

    stream: str
    entry_id: str
    camera: str = ""
    events: list[str] = field(default_factory=list)  # event JSON documents
    result: str = ""  # FrameResult JSON for a batch job's results stream
    reply_to: str = ""
    dead_letter: dict[bytes | str, bytes | str] | None = None  # dead-letter entry fields
    captured_at: float | None = None  # set for analysed frames (latency and accounting)
    recorded: bool = False  # a recorded video's frame: captured_at is the video's clock, no latency
    stat: Stat | str = ""  # field of the camera's stats hash to count this frame under
    frame_record: str = ""  # FrameRecord JSON for the tracking stage (live frames)


class OutcomeWriter:
    """Writes a micro-batch's outcomes in one pipelined round trip, each with the Lua
    script that acks its entry first and writes only if that ack won (exactly-once)."""

    def __init__(self, client: aioredis.Redis, group: str, events_max_len: int, dead_letter_max_len: int) -> None:
        self.redis = client
        self.group = group
        self.events_max_len = events_max_len
        self.dead_letter_max_len = dead_letter_max_len
        self._publish = LuaScript(client, _PUBLISH)
        self._dead_letter = LuaScript(client, _DEAD_LETTER)
        self._announced: dict[str, float] = {}  # camera -> when it was last added to tracked-cameras

    def recent_cameras(self, within_s: float) -> list[str]:
        """Cameras this writer announced frame records for in the last ``within_s`` seconds."""
        now = time.monotonic()
        return sorted(c for c, at in self._announced.items() if now - at <= within_s)

    async def write(self, outcomes: list[Outcome]) -> list[bool]:
        """Write all outcomes in one round trip; True where this worker's ACK won."""
        if not outcomes:
            return []
        pipe = self.redis.pipeline(transaction=False)
        announce: set[str] = set()
        for o in outcomes:
            # The stream names the camera: events and stats never go anywhere else.
            camera = keys.camera_of(o.stream)
            result = o.result if o.reply_to else ""
            extra = [o.reply_to] if result else []
            if o.frame_record:
                extra.append(keys.analysed(camera))
                announce.add(camera)
            common: list[EncodableT] = [result, RESULTS_TTL_S, o.stat, o.frame_record, self.events_max_len]
            if o.dead_letter is not None:
                payload = [item for pair in o.dead_letter.items() for item in pair]
                await self._dead_letter(
                    keys=[o.stream, keys.dead_letter(camera), keys.stats(camera), *extra],
                    args=[self.group, o.entry_id, self.dead_letter_max_len, *common, *payload],
                    client=pipe,
                )
            else:
                await self._publish(
                    keys=[o.stream, keys.events(camera), keys.stats(camera), *extra],
                    args=[self.group, o.entry_id, self.events_max_len, *common, *o.events],
                    client=pipe,
                )
        now = time.monotonic()
        due = sorted(c for c in announce if now - self._announced.get(c, -ANNOUNCE_S) >= ANNOUNCE_S)
        if due:
            # After the scripts: a tracking owner that sees the camera finds its records.
            pipe.sadd(keys.TRACKED_CAMERAS, *due)
        replies = await pipe.execute(raise_on_error=False)
        if due and not isinstance(replies.pop(), Exception):
            self._announced.update((c, now) for c in due)
        for o, reply in zip(outcomes, replies):
            if isinstance(reply, TRANSIENT_ERRORS):
                raise reply  # an outage or a failover: the caller retries the whole write
            if isinstance(reply, redis.ResponseError):
                # Refused (a key of another type where a stream belongs): the entry
                # stays pending, is reclaimed, and ends as poison after a few tries.
                metrics.REDIS_ERRORS.labels("worker").inc()
                log.error("cannot write outcome of %s %s: %s", o.stream, o.entry_id, reply)
        return [not isinstance(reply, Exception) and bool(reply) for reply in replies]
