"""Prometheus metrics (served on /metrics by every role)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

MESSAGES = Counter(
    "birthdayd_messages_total",
    "Greetings by outcome: sent, retried, failed, expired, deferred, dropped.",
    ["occasion", "outcome"],
)
SEND_SECONDS = Histogram(
    "birthdayd_send_seconds",
    "Provider call latency.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
LATENESS_SECONDS = Histogram(
    "birthdayd_lateness_seconds",
    "How long after its send instant a greeting was accepted by the provider.",
    buckets=(0.1, 0.5, 1, 2, 5, 15, 60, 300, 3600, 86400, 604800),
)
DUE_BACKLOG = Gauge("birthdayd_due_backlog", "Rows due and not yet claimed.")
QUEUE_DEPTH = Gauge("birthdayd_queue_depth",
                    "Ids ready in RabbitMQ, as the scheduler last read them: the main queue "
                    "(main) and the bounded dead-letter queue (dead).", ["queue"])
BREAKER_OPEN = Gauge("birthdayd_breaker_open", "1 while the provider circuit breaker is open.")
POSSIBLE_DUPLICATES = Counter(
    "birthdayd_possible_duplicates_total",
    "Retries after the provider may already have accepted (a timeout, or a lease that ran out "
    "in sending): the two duplicate windows of docs/ARCHITECTURE.md §5.",
    ["reason"],
)
TICK_CLAIMED = Counter("birthdayd_tick_claimed_total", "Rows claimed and published by ticks.")
RECOVERED = Counter("birthdayd_recovered_total", "Rows taken back after their lease ran out.",
                    ["state"])
HEALED = Counter("birthdayd_healed_total", "Next greetings created by the daily job.")
REDELIVERIES_DROPPED = Counter(
    "birthdayd_redeliveries_dropped_total",
    "Deliveries whose row was not queued (already handled): acked and dropped.",
)
