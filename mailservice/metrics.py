"""The gateway's Prometheus metrics, computed from the tables at each scrape (docs/monitoring.md).

Why from the database: web and worker processes are many, on several hosts, and come and go.
Counters kept in each process would each hold a share and start over at every restart, whereas
the outbox rows already record every message, attempt and tracking event. So a scrape of any
one web process answers for the whole service, and the totals add up whatever the number of
processes. Each family is one aggregate query (GROUP BY), so a scrape costs the same number of
queries whatever the table sizes; the provider states come from the failover memory (cache).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta

from django.db import connections, router
from django.db.models import Count, DurationField, ExpressionWrapper, F, Min, Q, QuerySet, Sum
from django.utils import timezone
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from failover.attempts import Outcome
from failover.backends import FirstWorkingEmailBackend
from mailservice.models import DeliveryAttempt, Message, TrackingEvent
from mailservice.models.messages import READY_STATUSES
from mailservice.statuses import MessageStatus

logger = logging.getLogger(__name__)

# Accepted -> sent, in seconds: from a provider answering at once to an hour of retries.
DELIVERY_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
# What FirstWorkingEmailBackend.provider_states() reports (docs/failover.md, "failover_status").
PROVIDER_STATES = ("active", "standby", "failing", "waiting")


class GatewayCollector(Collector):
    """Every smtest_* family, read fresh at each scrape."""

    def collect(self) -> Iterator[Metric]:
        now = timezone.now()
        yield messages_by_status()
        yield provider_attempts()
        yield failovers()
        yield provider_states()
        yield delivery_seconds()
        yield from queue(now)
        yield webhook_events()


@functools.cache
def registry() -> CollectorRegistry:
    """The registry /metrics exposes: this collector alone (no per-process metrics, which would
    describe whichever web process answered the scrape). Built on first use, not at import, and
    without auto-describe, which would query the database at registration."""
    collectors = CollectorRegistry(auto_describe=False)
    collectors.register(GatewayCollector())
    return collectors


def messages_by_status() -> GaugeMetricFamily:
    counts = dict(Message.objects.order_by().values_list("status").annotate(count=Count("pk")))
    family = GaugeMetricFamily("smtest_messages", "Messages in the outbox by status.", labels=["status"])
    for status in [*MessageStatus.values, *sorted(set(counts) - set(MessageStatus.values))]:
        family.add_metric([status], counts.get(status, 0))
    return family


def provider_attempts() -> CounterMetricFamily:
    documentation = "Delivery attempts by provider and outcome (recorded DeliveryAttempt rows)."
    labels = {"provider": "provider", "outcome": "outcome"}
    return _rows_counted("smtest_provider_attempts", documentation, DeliveryAttempt.objects.all(), labels)


def _rows_counted(
    name: str, documentation: str, rows: QuerySet, labels: dict[str, str]
) -> CounterMetricFamily:
    """A counter family with one sample per distinct value of the `labels` columns (label name:
    field), counted by one GROUP BY query."""
    family = CounterMetricFamily(name, documentation, labels=list(labels))
    grouped = rows.order_by().values_list(*labels.values()).annotate(count=Count("pk"))
    for *values, count in sorted(grouped):
        family.add_metric(list(values), count)
    return family


def failovers() -> CounterMetricFamily:
    family = CounterMetricFamily(
        "smtest_failovers",
        "Messages moved off a provider to the next within one delivery round; reason is the "
        "outcome of the attempt that failed.",
        labels=["from", "to", "reason"],
    )
    for source, target, reason, count in _failover_rows():
        family.add_metric([source, target, reason], count)
    return family


def _failover_rows() -> list[tuple[str, str, str, int]]:
    """Consecutive attempts of one message in one round (id order), counted by pair and by the
    first one's outcome. Only messages with an attempt that did not send are windowed, so the
    sort covers the few that failed over, not every attempt ever made."""
    connection = connections[router.db_for_read(DeliveryAttempt)]
    name = connection.ops.quote_name
    table, message, round_, attempt_id = (
        name(DeliveryAttempt._meta.db_table),
        name("message_id"),
        name("round"),
        name("id"),
    )
    provider, outcome = name("provider"), name("outcome")
    sql = f"""
        SELECT {provider}, next_provider, {outcome}, COUNT(*) FROM (
            SELECT {provider}, {outcome},
                   LEAD({provider})
                       OVER (PARTITION BY {message}, {round_} ORDER BY {attempt_id}) AS next_provider
            FROM {table}
            WHERE {message} IN (SELECT {message} FROM {table} WHERE {outcome} <> %s)
        ) pairs
        WHERE next_provider IS NOT NULL AND next_provider <> '' AND {provider} <> '' AND {outcome} <> %s
        GROUP BY {provider}, next_provider, {outcome}
        ORDER BY {provider}, next_provider, {outcome}
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, [Outcome.SENT.value, Outcome.SENT.value])
        return [(str(a), str(b), str(c), int(n)) for a, b, c, n in cursor.fetchall()]


def provider_states() -> GaugeMetricFamily:
    """From the failover memory every process shares (the cache), not from the database."""
    family = GaugeMetricFamily(
        "smtest_provider_state",
        "1 for each provider's current state in the failover memory, 0 for its other states.",
        labels=["provider", "state"],
    )
    try:
        rows = FirstWorkingEmailBackend().provider_states()
    except Exception as err:  # a misconfigured chain or a cache down: the other families still count
        logger.warning(
            "provider states unavailable for metrics error_class=%s",
            type(err).__name__,
            extra={"error_class": type(err).__name__},
        )
        return family
    for row in rows:
        for state in _states(row["state"]):
            family.add_metric([row["name"], state], 1 if state == row["state"] else 0)
    return family


def _states(current: str) -> Iterable[str]:
    return PROVIDER_STATES if current in PROVIDER_STATES else (*PROVIDER_STATES, current)


def delivery_seconds() -> HistogramMetricFamily:
    """Accepted (created_at) -> sent (sent_at) of every message a provider took: one query,
    one conditional count per bucket."""
    took = ExpressionWrapper(F("sent_at") - F("created_at"), output_field=DurationField())
    buckets = {
        f"le_{index}": Count("pk", filter=Q(sent_at__lte=F("created_at") + timedelta(seconds=bound)))
        for index, bound in enumerate(DELIVERY_BUCKETS)
    }
    totals = Message.objects.filter(sent_at__isnull=False).aggregate(
        count=Count("pk"), took=Sum(took), **buckets
    )
    seconds = totals["took"].total_seconds() if totals["took"] is not None else 0.0
    return HistogramMetricFamily(
        "smtest_delivery_seconds",
        "Seconds from acceptance to a provider taking the message (created_at to sent_at).",
        buckets=[
            *(
                (floatToGoString(bound), totals[f"le_{index}"])
                for index, bound in enumerate(DELIVERY_BUCKETS)
            ),
            ("+Inf", totals["count"]),
        ],
        sum_value=seconds,
    )


def queue(now: datetime) -> Iterator[GaugeMetricFamily]:
    """Messages due and waiting for a worker (queued, or deferred whose retry time has come),
    and how long the longest-waiting of them has been due."""
    due = Message.objects.filter(status__in=READY_STATUSES, next_attempt_at__lte=now).aggregate(
        depth=Count("pk"), oldest=Min("next_attempt_at")
    )
    yield GaugeMetricFamily(
        "smtest_queue_depth",
        "Messages due and waiting for a worker (queued or deferred, due now).",
        value=due["depth"],
    )
    age = max((now - due["oldest"]).total_seconds(), 0.0) if due["oldest"] else 0.0
    yield GaugeMetricFamily(
        "smtest_queue_oldest_age_seconds",
        "Seconds the longest-waiting due message has been due (0 when none is).",
        value=age,
    )


def webhook_events() -> CounterMetricFamily:
    documentation = "Tracking events recorded from provider webhooks, by provider and event type."
    labels = {"provider": "provider", "type": "event_type"}
    return _rows_counted("smtest_webhook_events", documentation, TrackingEvent.objects.all(), labels)
