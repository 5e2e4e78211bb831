"""RabbitMQ (aiormq): topology, publishing with confirms, consuming with acks.

Messages carry only a row id; PostgreSQL says what to do with it.  aiormq does
not reconnect by itself, so :class:`Broker` runs a supervisor task that
watches everything a working process depends on: the connection, the publish
channel, each consumer's channel, and the broker's cancellation of a consumer
(its queue deleted, a consumer timeout).  When any of them breaks, the
supervisor drops the connection and builds everything again: connect,
declare the topology, consume.  A missing main queue is re-created, and
``on_queue_created`` is told so that the ids it held are published again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

import aiormq
from aiormq.abc import DeliveredMessage
from pamqp import commands as spec

from birthdayd import BirthdaydError, backoff

logger = logging.getLogger(__name__)

# A poison id redelivered this often goes to the dead-letter queue; the row
# itself is swept back by recovery, so nothing is lost.
DELIVERY_LIMIT = 20
PUBLISH_TIMEOUT_S = 30.0
DEAD_LETTER_MAX = 100_000
CONNECT_TIMEOUT_S = 15.0
# Connecting retries on any error: aiormq fails pending calls with its own
# errors, OSError, a bare Exception, or CancelledError when the connection dies
# under them (see Broker._connect_once).  Each failure is logged; none may end
# the supervisor silently.
CONNECT_ERRORS: tuple[type[BaseException], ...] = (Exception,)

Handler = Callable[[DeliveredMessage], Coroutine[Any, Any, None]]


class PublishFailed(BirthdaydError):
    pass


class ConnectionLost(BirthdaydError):
    pass


class Names:
    def __init__(self, queue: str) -> None:
        self.queue = queue
        self.exchange = queue
        self.dead_exchange = f"{queue}.dlx"
        self.dead_queue = f"{queue}.dead"


class Broker:
    def __init__(self, url: str, queue: str,
                 on_queue_created: Callable[[], Awaitable[None]] | None = None) -> None:
        self.url = url
        self.names = Names(queue)
        self.on_queue_created = on_queue_created
        self._connection: aiormq.abc.AbstractConnection | None = None
        self._publish_channel: aiormq.abc.AbstractChannel | None = None
        self._consumers: list[tuple[Handler, int]] = []
        self._subscriptions: list[tuple[aiormq.abc.AbstractChannel, str]] = []
        self._broken = asyncio.Event()
        self._reason = ""
        self._publish_failing = False
        self._generation = 0
        """Bumped when a connection is dropped: its late close events are stale."""
        self._stopping = asyncio.Event()
        self.supervisor: asyncio.Task[None] | None = None
        """Keeps the broker connected and consuming; it ends only on stop()."""

    # -- lifecycle --------------------------------------------------------------

    async def start(self) -> None:
        """Connect (waiting for RabbitMQ as long as it takes), then supervise."""
        await self._connect_until_up()
        self.supervisor = asyncio.create_task(self._supervise(), name="broker-supervisor")

    async def stop(self) -> None:
        self._stopping.set()
        self._broken.set()
        if self.supervisor is not None:
            self.supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.supervisor
        await self._close()

    @property
    def connected(self) -> bool:
        return self._connection is not None and not self._connection.is_closed

    @property
    def consuming(self) -> bool:
        """Every registered consumer is subscribed on an open channel."""
        if not self.connected or len(self._subscriptions) != len(self._consumers):
            return False
        return all(not channel.is_closed and tag in channel.consumers  # type: ignore[attr-defined]
                   for channel, tag in self._subscriptions)

    @property
    def can_publish(self) -> bool:
        """Connected with an open publish channel, and the last publish went through."""
        channel = self._publish_channel
        return self.connected and channel is not None and not channel.is_closed \
            and not self._publish_failing

    async def check(self) -> bool:
        return self.connected

    # -- supervision ------------------------------------------------------------

    async def _supervise(self) -> None:
        while not self._stopping.is_set():
            await self._broken.wait()
            if self._stopping.is_set():
                return
            logger.warning("RabbitMQ: %s; reconnecting", self._reason,
                           extra={"event": "broker_disconnected", "reason": self._reason})
            await self._close()
            await self._connect_until_up()

    def _break(self, reason: str) -> None:
        if not self._broken.is_set():
            self._reason = reason
            self._broken.set()

    def _watch(self, resource: aiormq.abc.AbstractConnection | aiormq.abc.AbstractChannel,
               what: str) -> None:
        """Break when ``resource`` closes (for whatever reason)."""
        observer = resource.closing
        generation = self._generation

        def closed(future: asyncio.Future[Any]) -> None:
            if not future.cancelled():
                future.exception()  # retrieved: the reason is logged by _supervise
            if generation == self._generation:
                self._break(f"{what} closed")

        observer.add_done_callback(closed)

    async def _connect_until_up(self) -> None:
        await backoff.retry(self._connect_once, errors=CONNECT_ERRORS,
                            what="connecting to RabbitMQ", base_s=0.2, cap_s=10.0)

    async def _connect_once(self) -> None:
        try:
            await self._connect()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # we are being cancelled (stop)
            # aiormq failed a pending call with CancelledError: its connection died.
            raise ConnectionLost("connection dropped while connecting") from None

    async def _connect(self) -> None:
        connection = await asyncio.wait_for(aiormq.connect(self.url), CONNECT_TIMEOUT_S)
        try:
            created = await declare(connection, self.names)
            channel = await connection.channel(publisher_confirms=True)
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
        self._publish_failing = False
        self._broken.clear()
        self._watch(connection, "connection")
        self._watch(channel, "publish channel")
        for sub_channel, _ in subscriptions:
            self._watch(sub_channel, "consumer channel")
        logger.info("connected to RabbitMQ", extra={"event": "broker_connected"})
        if created:
            logger.warning("queue %s was missing and has been created", self.names.queue,
                           extra={"event": "queue_created", "queue": self.names.queue})
            if self.on_queue_created is not None:
                await self._notify_queue_created()

    async def _notify_queue_created(self) -> None:
        assert self.on_queue_created is not None
        try:
            await self.on_queue_created()
        except Exception:
            # Queued rows then wait for their lease to run out instead.
            logger.exception("could not re-publish the ids of a missing queue",
                             extra={"event": "requeue_failed"})

    async def _close(self) -> None:
        self._generation += 1
        connection, self._connection = self._connection, None
        self._publish_channel = None
        self._subscriptions = []
        if connection is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(connection.close(), 5)

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
        self._publish_failing = bool(failures)
        if any(isinstance(f, aiormq.exceptions.PublishError) for f in failures):
            # Returned unroutable: the queue is gone.  Reconnecting declares it.
            self._break("a publish found no queue")
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

    async def queue_depth(self, queue: str | None = None, *, redeclare: bool = True) -> int:
        """Ids ready in the main queue, or in ``queue`` (delivered, unacked ones
        not counted).  A missing queue raises PublishFailed and, with
        ``redeclare``, makes the broker reconnect and declare it again."""
        name = queue or self.names.queue
        connection = self._connection
        if connection is None or connection.is_closed:
            raise PublishFailed("not connected to RabbitMQ")
        channel = await connection.channel()
        try:
            ok = await channel.queue_declare(name, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            if redeclare:
                self._break(f"queue {name} is gone")  # reconnecting declares it again
            raise PublishFailed(f"cannot publish: queue {name} is missing") from None
        finally:
            if not channel.is_closed:
                await channel.close()
        return int(ok.message_count or 0)

    # -- consuming --------------------------------------------------------------

    async def consume(self, handler: Handler, prefetch: int) -> None:
        """Deliver every message of the main queue to ``handler`` (also after reconnects)."""
        self._consumers.append((handler, prefetch))
        if self.connected:
            assert self._connection is not None
            channel, tag = await self._subscribe(self._connection, handler, prefetch)
            self._subscriptions.append((channel, tag))
            self._watch(channel, "consumer channel")

    async def cancel_consumers(self) -> None:
        """Stop taking deliveries; unacked ones stay ours until acked or the channel closes."""
        self._consumers.clear()
        subscriptions, self._subscriptions = self._subscriptions, []
        for channel, tag in subscriptions:
            channel.on_consumer_cancel_callbacks.clear()
            with contextlib.suppress(Exception):
                await channel.basic_cancel(tag)

    async def _subscribe(self, connection: aiormq.abc.AbstractConnection, handler: Handler,
                         prefetch: int) -> tuple[aiormq.abc.AbstractChannel, str]:
        channel = await connection.channel()
        await channel.basic_qos(prefetch_count=prefetch)

        generation = self._generation

        async def cancelled(_: Any) -> None:
            if generation == self._generation:
                self._break("consumer cancelled by the broker")

        channel.on_consumer_cancel_callbacks.add(cancelled)
        ok = await channel.basic_consume(self.names.queue, handler, no_ack=False)
        assert ok.consumer_tag is not None
        return channel, ok.consumer_tag


async def declare(connection: aiormq.abc.AbstractConnection, names: Names) -> bool:
    """Declare the topology (idempotent, so every process does it at start);
    True if the main queue did not exist before."""
    probe = await connection.channel()
    try:
        await probe.queue_declare(names.queue, passive=True)
        created = False
    except aiormq.exceptions.ChannelNotFoundEntity:
        created = True  # the failed passive declare closed the probe channel
    finally:
        if not probe.is_closed:
            await probe.close()
    channel = await connection.channel()
    await channel.exchange_declare(names.dead_exchange, exchange_type="fanout", durable=True)
    try:
        await channel.queue_declare(names.dead_queue, durable=True, arguments={
            "x-queue-type": "quorum",
            # Bounded: dead ids are only a trace (recovery brings their rows
            # back), so the oldest go first rather than filling the broker.
            "x-max-length": DEAD_LETTER_MAX,
            "x-overflow": "drop-head",
        })
    except aiormq.exceptions.ChannelPreconditionFailed:
        # Declared by an older version without the bound: keep it (arguments
        # cannot change in place); a policy with max-length bounds it.
        logger.warning("%s exists without a length bound; set one with a RabbitMQ "
                       "policy (max-length %d)", names.dead_queue, DEAD_LETTER_MAX,
                       extra={"event": "dead_queue_unbounded"})
        channel = await connection.channel()
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
    await channel.close()
    return created


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
