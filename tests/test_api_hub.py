"""The API hub's hand-out, in process: a caught-up client's events are written to its
connection by the hub itself, the others are queued for the client's task, and no event
is ever written past one that waits in the queue or in the task.

The connection is a list with a switch (a socket whose buffer is full refuses a write
now); the client's task is played by ``drain``, as the event stream does it."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from api.hub import EventHub, Subscription
from api.streams import Event, EventId


class Connection:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.open = True

    def write_now(self, body: bytes) -> bool:
        if self.open:
            self.written.append(body)
        return self.open


def event(ms: int, camera: str = "cam") -> Event:
    return Event(EventId(ms, 0, "events", camera), "face", f'{{"ms": {ms}}}')


def messages(events: list[Event]) -> list[bytes]:
    return [e.message for e in events]


def drain(subscription: Subscription, connection: Connection) -> None:
    """The client's task: what is queued, written once the connection takes it."""
    while not subscription.queue.empty():
        item = subscription.queue.get_nowait()
        assert item is not None
        connection.written.append(item.message)


def hub_with_client(buffer: int = 10) -> tuple[EventHub, Subscription, Connection]:
    hub = EventHub(aioredis.Redis(), buffer)  # hand-out needs no Redis
    subscription = hub.subscribe(None, frozenset({"face"}))
    connection = Connection()
    subscription.write_now = connection.write_now
    subscription.direct = True
    return hub, subscription, connection


def test_caught_up_clients_get_events_written_by_the_hub() -> None:
    async def run() -> None:
        hub, subscription, connection = hub_with_client()
        events = [event(1), event(2)]
        hub._hand_out(events)
        assert connection.written == [b"".join(messages(events))]
        assert subscription.queue.empty()

    asyncio.run(run())


def test_no_event_is_written_past_a_queued_one() -> None:
    async def run() -> None:
        hub, subscription, connection = hub_with_client()
        e1, e2, e3, e4 = event(1), event(2), event(3), event(4)
        hub._hand_out([e1])
        connection.open = False  # the socket's buffer is full
        hub._hand_out([e2])
        connection.open = True  # it drained; e2 still waits in the queue
        hub._hand_out([e3])
        subscription.busy = True  # the task took e2 and e3 and is writing them
        items = [subscription.queue.get_nowait(), subscription.queue.get_nowait()]
        hub._hand_out([e4])
        connection.written += [i.message for i in items if i is not None]
        subscription.busy = False
        drain(subscription, connection)
        assert connection.written == messages([e1, e2, e3, e4])

    asyncio.run(run())


def test_events_at_or_below_the_replay_floor_are_not_written_again() -> None:
    async def run() -> None:
        hub, subscription, connection = hub_with_client()
        subscription.floor = EventId(2, 0, "events", "cam")  # replayed up to here
        hub._hand_out([event(1), event(2), event(3)])
        assert connection.written == messages([event(3)])

    asyncio.run(run())


def test_a_client_whose_connection_stays_full_is_dropped_at_its_buffer() -> None:
    async def run() -> None:
        hub, subscription, connection = hub_with_client(buffer=3)
        connection.open = False
        for ms in range(1, 6):
            hub._hand_out([event(ms)])
        assert subscription.dropped.is_set()
        assert subscription.queue.qsize() == 3
        hub._hand_out([event(6)])  # a dropped client gets nothing more
        assert subscription.queue.qsize() == 3 and connection.written == []

    asyncio.run(run())


def test_a_server_cycle_without_the_fields_it_reads_refuses_direct_writes() -> None:
    # Should uvicorn rename the fields the synchronous write reads, streams fall back to
    # the queued path instead of failing.
    from api.service import _write_chunk

    class Renamed:
        transport = None

    assert _write_chunk(Renamed(), b"event") is False  # type: ignore[arg-type]
