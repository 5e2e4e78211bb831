"""RabbitMQ (aiormq): topology, publishing with confirms, consuming with acks.

Messages carry only a row id; PostgreSQL says what to do with it.  aiormq does
not reconnect by itself, so :class:`Broker` watches its connection and
reconnects with backoff, declaring the topology and re-subscribing consumers
each time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

import aiormq
from aiormq.abc import DeliveredMessage
from pamqp import commands as spec

from birthdayd import BirthdaydError

logger = logging.getLogger(__name__)

# A poison id redelivered this often goes to the dead-letter queue; the row
# itself is swept back by recovery, so nothing is lost.
DELIVERY_LIMIT = 20
PUBLISH_TIMEOUT_S = 30.0

Handler = Callable[[DeliveredMessage], Coroutine[Any, Any, None]]


class PublishFailed(BirthdaydError):
    pass


class Names:
    def __init__(self, queue: str) -> None:
        self.queue = queue
        self.exchange = queue
        self.dead_exchange = f"{queue}.dlx"
        self.dead_queue = f"{queue}.dead"


class Broker:
    def __init__(self, url: str, queue: str) -> None:
        self.url = url
        self.names = Names(queue)
        self._connection: aiormq.abc.AbstractConnection | None = None
        self._publish_channel: aiormq.abc.AbstractChannel | None = None
        self._consumers: list[tuple[Handler, int]] = []
        self._subscriptions: list[tuple[aiormq.abc.AbstractChannel, str]] = []
        self._connected = asyncio.Event()
        self._watch: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    # -- lifecycle --------------------------------------------------------------

    async def start(self) -> None:
        """Connect (waiting for RabbitMQ as long as it takes) and keep connected."""
        await self._connect_forever()
        self._watch = asyncio.create_task(self._watch_connection(), name="broker-watch")

    async def stop(self) -> None:
        self._stopping.set()
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()

    @property
    def ready(self) -> bool:
        return self._connection is not None and not self._connection.is_closed

    async def check(self) -> bool:
        return self.ready

    async def _connect_forever(self) -> None:
        delay_s = 0.2
        while True:
            try:
                await self._connect()
                return
            except (TimeoutError, OSError, aiormq.exceptions.AMQPError) as e:
                logger.warning("RabbitMQ unavailable (%s); retrying in %.1fs", e, delay_s,
                               extra={"event": "broker_unavailable"})
                await asyncio.sleep(delay_s * (0.5 + random.random()))  # noqa: S311
                delay_s = min(delay_s * 2, 10.0)

    async def _connect(self) -> None:
        self._connected.clear()
        connection = await asyncio.wait_for(aiormq.connect(self.url), 15)
        try:
            channel = await connection.channel(publisher_confirms=True)
            await declare(channel, self.names)
            subscriptions = [
                await self._subscribe(connection, handler, prefetch)
                for handler, prefetch in self._consumers
            ]
        except BaseException:
            await connection.close()
            raise
        self._connection = connection
        self._publish_channel = channel
        self._subscriptions = subscriptions
        self._connected.set()
        logger.info("connected to RabbitMQ", extra={"event": "broker_connected"})

    async def _watch_connection(self) -> None:
        while not self._stopping.is_set():
            assert self._connection is not None
            # ``closing`` may end with CancelledError (a missed heartbeat):
            # wait for it without letting that cancel this watcher.
            await asyncio.wait([self._connection.closing])
            if self._stopping.is_set():
                return
            logger.warning("RabbitMQ connection lost; reconnecting",
                           extra={"event": "broker_disconnected"})
            await self._connect_forever()

    # -- publishing -------------------------------------------------------------

    async def publish(self, ids: Iterable[uuid.UUID]) -> None:
        """Publish each id as a persistent message and wait for every confirm."""
        channel = self._publish_channel
        if channel is None or channel.is_closed:
            raise PublishFailed("not connected to RabbitMQ")
        results = await asyncio.gather(
            *(self._publish_one(channel, i) for i in ids), return_exceptions=True
        )
        failures = [r for r in results if r is not None]
        if failures:
            raise PublishFailed(f"{len(failures)} of {len(results)} publishes failed: "
                                f"{failures[0]!r}")

    async def _publish_one(self, channel: aiormq.abc.AbstractChannel, message_id: uuid.UUID
                           ) -> None:
        confirmation = await channel.basic_publish(
            str(message_id).encode(),
            exchange=self.names.exchange,
            routing_key=self.names.queue,
            properties=spec.Basic.Properties(
                delivery_mode=2, message_id=str(message_id), content_type="text/plain"
            ),
            mandatory=True,
            timeout=PUBLISH_TIMEOUT_S,
        )
        if not isinstance(confirmation, spec.Basic.Ack):
            raise PublishFailed(f"broker did not confirm {message_id}: {confirmation!r}")

    # -- consuming --------------------------------------------------------------

    async def consume(self, handler: Handler, prefetch: int) -> None:
        """Deliver every message of the main queue to ``handler`` (also after reconnects)."""
        self._consumers.append((handler, prefetch))
        if self._connection is not None and not self._connection.is_closed:
            self._subscriptions.append(
                await self._subscribe(self._connection, handler, prefetch)
            )

    async def cancel_consumers(self) -> None:
        """Stop taking deliveries; unacked ones stay ours until acked or the channel closes."""
        self._consumers.clear()
        for channel, tag in self._subscriptions:
            with contextlib.suppress(Exception):
                await channel.basic_cancel(tag)

    async def _subscribe(self, connection: aiormq.abc.AbstractConnection, handler: Handler,
                         prefetch: int) -> tuple[aiormq.abc.AbstractChannel, str]:
        channel = await connection.channel()
        await channel.basic_qos(prefetch_count=prefetch)
        ok = await channel.basic_consume(self.names.queue, handler, no_ack=False)
        assert ok.consumer_tag is not None
        return channel, ok.consumer_tag


async def declare(channel: aiormq.abc.AbstractChannel, names: Names) -> None:
    """Declare the topology; idempotent, so every process does it at start."""
    await channel.exchange_declare(names.dead_exchange, exchange_type="fanout", durable=True)
    await channel.queue_declare(
        names.dead_queue, durable=True, arguments={"x-queue-type": "quorum"}
    )
    await channel.queue_bind(names.dead_queue, names.dead_exchange, routing_key="")
    await channel.exchange_declare(names.exchange, exchange_type="direct", durable=True)
    await channel.queue_declare(
        names.queue,
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            "x-delivery-limit": DELIVERY_LIMIT,
            "x-dead-letter-exchange": names.dead_exchange,
        },
    )
    await channel.queue_bind(names.queue, names.exchange, routing_key=names.queue)


async def ack(message: DeliveredMessage) -> None:
    """Ack, tolerating a channel that died meanwhile (the broker then redelivers,
    and the row's state makes the redelivery a no-op)."""
    tag = getattr(message.delivery, "delivery_tag", None)
    if tag is None:
        return
    try:
        await message.channel.basic_ack(tag)
    except Exception as e:  # noqa: BLE001
        logger.warning("ack failed (%s); the broker will redeliver", e,
                       extra={"event": "ack_failed"})
