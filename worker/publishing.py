"""Writing a batch's outcome to Redis: events, results, dead letters - each atomic with its ACK.

Delivery from the consumer group is at-least-once: a worker that stalls past the claim
timeout can see its entries reclaimed and processed again elsewhere. Each frame's
outputs are therefore written by a Lua script that first XACKs the entry and only writes
if that ACK removed it from the pending list. Whichever worker acks first publishes;
the other's copy is discarded. Each frame's events appear exactly once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import redis
import redis.asyncio as aioredis

from emotion_stream import keys, metrics
from emotion_stream.keys import Stat

log = logging.getLogger(__name__)

RESULTS_TTL_S = 7 * 24 * 3600  # a batch job abandoned by its collector does not linger forever

# KEYS: frames stream, output stream, stats hash[, results stream when the frame has one]
# ARGV: group, entry id, output maxlen, result json or '', results ttl, stats field or '',
#       payload...
_PREAMBLE = """
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
if ARGV[6] ~= '' then redis.call('HINCRBY', KEYS[3], ARGV[6], 1) end
if KEYS[4] then
  redis.call('XADD', KEYS[4], '*', 'result', ARGV[4])
  redis.call('EXPIRE', KEYS[4], ARGV[5])
end
"""

# payload: event JSON documents; each goes to the events stream and its pub/sub channel.
_PUBLISH = _PREAMBLE + """
for i = 7, #ARGV do
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'event', ARGV[i])
  redis.call('PUBLISH', KEYS[2], ARGV[i])
end
return 1
"""

# payload: field/value pairs of the dead-letter entry.
_DEAD_LETTER = _PREAMBLE + """
if #ARGV > 6 then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', unpack(ARGV, 7))
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
    stat: Stat | str = ""  # field of the camera's stats hash to count this frame under


class OutcomeWriter:
    """Writes a micro-batch's outcomes in one pipelined round trip, each with the Lua
    script that acks its entry first and writes only if that ack won (exactly-once)."""

    def __init__(self, client: aioredis.Redis, group: str, events_max_len: int, dead_letter_max_len: int) -> None:
        self.redis = client
        self.group = group
        self.events_max_len = events_max_len
        self.dead_letter_max_len = dead_letter_max_len
        self._publish = client.register_script(_PUBLISH)
        self._dead_letter = client.register_script(_DEAD_LETTER)

    async def write(self, outcomes: list[Outcome]) -> list[bool]:
        """Write all outcomes in one round trip; True where this worker's ACK won."""
        if not outcomes:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for o in outcomes:
            # The stream names the camera: events and stats never go anywhere else.
            camera = keys.camera_of_frames_key(o.stream)
            results = [o.reply_to] if o.reply_to and o.result else []
            if o.dead_letter is not None:
                payload = [item for pair in o.dead_letter.items() for item in pair]
                await self._dead_letter(
                    keys=[o.stream, keys.DEAD_LETTER, keys.stats(camera), *results],
                    args=[self.group, o.entry_id, self.dead_letter_max_len, o.result, RESULTS_TTL_S, o.stat, *payload],
                    client=pipe,
                )
            else:
                await self._publish(
                    keys=[o.stream, keys.events(camera), keys.stats(camera), *results],
                    args=[self.group, o.entry_id, self.events_max_len, o.result, RESULTS_TTL_S, o.stat, *o.events],
                    client=pipe,
                )
        replies = await pipe.execute(raise_on_error=False)
        for o, reply in zip(outcomes, replies):
            if isinstance(reply, redis.ConnectionError):
                raise reply  # an outage: the caller retries the whole write
            if isinstance(reply, redis.ResponseError):
                # Refused (a key of another type where a stream belongs): the entry
                # stays pending, is reclaimed, and ends as poison after a few tries.
                metrics.REDIS_ERRORS.labels("worker").inc()
                log.error("cannot write outcome of %s %s: %s", o.stream, o.entry_id, reply)
        return [not isinstance(reply, Exception) and bool(reply) for reply in replies]
