"""Hand claimed rows to RabbitMQ without a window in which a crash strands them.

A claim marks rows ``queued`` under a short *publish lease* and commits (a
worker must find them queued).  Once RabbitMQ has confirmed the ids, the
lease is extended to :data:`QUEUED_LEASE`, long enough for any backlog.  A
process that dies between the two leaves rows whose short lease soon runs
out, and recovery hands them back; a publish that fails hands them back at
once.
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
        # this fails, the publish lease runs out and recovery acts.
        try:
            await asyncio.shield(store.unclaim(db, ids, now))
        except Exception:
            logger.exception("could not hand back %d unpublished rows", len(ids),
                             extra={"event": "unclaim_failed"})
        raise
    await store.extend_lease(db, ids, now + QUEUED_LEASE)
