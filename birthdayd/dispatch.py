"""Hand claimed rows to RabbitMQ.

A claim marks rows ``queued`` under :data:`QUEUED_LEASE` and commits (a
worker must find them queued), then the ids are published with confirms.  A
publish that fails, or is cancelled (SIGTERM), hands the rows back at once.
The lease is set by the claim itself (one write per greeting fewer than a
short lease extended after the confirm): the tick's backpressure keeps the
queue small enough to drain well within it.  The price is paid only if a
scheduler is killed between a claim and its confirm: those rows (at most a
few batches) wait for the lease before recovery publishes them again.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid

from birthdayd import broker as broker_mod
from birthdayd import retry, store

logger = logging.getLogger(__name__)

QUEUED_LEASE = dt.timedelta(seconds=retry.QUEUED_LEASE_S)


async def publish_claimed(
    db: store.Executor, broker: broker_mod.Broker, ids: list[uuid.UUID], now: dt.datetime
) -> None:
    try:
        await broker.publish(ids)
    except BaseException:
        # Failed, or cancelled (a SIGTERM mid-tick): hand the rows straight
        # back, shielded so that a cancelled caller still does it.  If even
        # this fails, the queued lease runs out and recovery acts.
        try:
            await asyncio.shield(store.unclaim(db, ids, now))
        except Exception:
            logger.exception("could not hand back %d unpublished rows", len(ids),
                             extra={"event": "unclaim_failed"})
        raise
