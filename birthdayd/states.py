"""The greeting state machine's states, spelled once for all Python code.

The migration's CHECK constraint is the database's own copy; a test compares
the two.  Transitions are the conditional UPDATEs in ``queries.sql``; the
diagram is in docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import enum


class Status(enum.StrEnum):
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    RETRYING = "retrying"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


PENDING = frozenset({Status.SCHEDULED, Status.QUEUED, Status.SENDING, Status.RETRYING})
"""Not done yet: what a user's ``schedule`` shows."""

REDRIVABLE = frozenset({Status.FAILED, Status.EXPIRED})
"""What POST /messages/{id}/retry accepts."""
