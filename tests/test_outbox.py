"""The per-connection reply queue: partials coalesce for a slow client, finals never drop."""

import asyncio

from server.outbox import Outbox


async def test_partials_are_dropped_oldest_first_and_finals_never():
    box = Outbox(max_partials=2, max_items=3)
    for i in range(5):
        box.put({"partial": i}, droppable=True)
        box.put({"final": i})
    assert box.dropped_partials == 3
    assert box.overflowing  # 5 finals waiting, more than 3 allowed: the connection drops the client
    box.close()
    got = []
    while (message := await box.get()) is not None:
        got.append(message)
    assert [m["final"] for m in got if "final" in m] == [0, 1, 2, 3, 4]
    assert [m["partial"] for m in got if "partial" in m] == [3, 4]


async def test_get_waits_for_a_message_and_ends_after_close():
    box = Outbox(max_partials=4)
    waiter = asyncio.create_task(box.get())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    box.put({"x": 1})
    assert await waiter == {"x": 1}
    box.close()
    assert await box.get() is None
