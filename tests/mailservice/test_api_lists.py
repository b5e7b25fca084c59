"""GET /api/messages and GET /api/suppressions: the page, its limits and its cost (docs/api.md)."""

from datetime import timedelta

from django.db import connection
from django.test import TestCase
from django.test.utils import CaptureQueriesContext

from mailservice.models import Message, Recipient, Suppression
from tests.mailservice.helpers import T0, GatewayMixin, gateway_settings

LISTS = ("/api/messages", "/api/suppressions")


def add_messages(count: int, start: int = 0) -> list[str]:
    """`count` messages, each with a to, a cc and a bcc recipient, one second apart."""
    ids = []
    for n in range(start, start + count):
        message = Message.objects.create(from_email="shop@example.com", created_at=T0 + timedelta(seconds=n))
        for kind in ("to", "cc", "bcc"):
            address = f"{kind}{n}@example.com"
            Recipient.objects.create(message=message, kind=kind, address=address, email=address)
        ids.append(str(message.pk))
    return ids


@gateway_settings()
class PageTests(GatewayMixin, TestCase):
    def get(self, url):
        response = self.client.get(url, **self.auth)
        return response.status_code, response.json()

    def test_page_has_count_limit_offset_and_items_in_that_order(self):
        """Both lists answer {"count", "limit", "offset", "items"}, limit 50 and offset 0 by default."""
        add_messages(1)
        Suppression.objects.create(address="a@example.com")
        for url in LISTS:
            with self.subTest(url=url):
                status, body = self.get(url)
                self.assertEqual(status, 200)
                self.assertEqual(list(body), ["count", "limit", "offset", "items"])
                self.assertEqual(body["count"], 1)
                self.assertEqual((body["limit"], body["offset"], len(body["items"])), (50, 0, 1))

    def test_limit_and_offset_page_through_and_count_stays_the_total(self):
        """`limit` and `offset` select a slice of the newest-first list; `count` is the total."""
        ids = add_messages(3)
        for n in range(3):
            Suppression.objects.create(address=f"s{n}@example.com", created_at=T0 + timedelta(seconds=n))
        status, body = self.get("/api/messages?limit=2&offset=1")
        self.assertEqual((status, body["count"], body["limit"], body["offset"]), (200, 3, 2, 1))
        self.assertEqual([m["id"] for m in body["items"]], [ids[1], ids[0]])
        status, body = self.get("/api/suppressions?limit=1&offset=2")
        self.assertEqual((body["count"], [s["address"] for s in body["items"]]), (3, ["s0@example.com"]))
        status, body = self.get("/api/suppressions?offset=5")
        self.assertEqual((status, body["count"], body["items"]), (200, 3, []))

    def test_limit_200_is_accepted(self):
        """The largest page is 200."""
        for url in LISTS:
            with self.subTest(url=url):
                status, body = self.get(f"{url}?limit=200")
                self.assertEqual((status, body["limit"]), (200, 200))

    def test_out_of_range_limit_and_offset_are_422_in_the_error_format(self):
        """limit outside 1..200, a negative offset or a non-number answer 422 on that parameter."""
        cases = {
            "limit=0": ["limit"],
            "limit=201": ["limit"],
            "limit=ten": ["limit"],
            "offset=-1": ["offset"],
            "limit=0&offset=-1": ["limit", "offset"],
        }
        for url in LISTS:
            for query, fields in cases.items():
                with self.subTest(url=url, query=query):
                    status, body = self.get(f"{url}?{query}")
                    self.assertEqual(status, 422)
                    self.assertEqual(list(body), ["errors"])
                    self.assertEqual([e["field"] for e in body["errors"]], fields)
                    self.assertTrue(all(e["message"] for e in body["errors"]))

    def test_filter_and_page_errors_are_answered_together(self):
        """A bad filter and a bad page parameter are both reported, the filter first."""
        status, body = self.get("/api/messages?status=lost&limit=0")
        self.assertEqual((status, [e["field"] for e in body["errors"]]), (422, ["status", "limit"]))


@gateway_settings()
class QueryCountTests(GatewayMixin, TestCase):
    def queries_for(self, url):
        with CaptureQueriesContext(connection) as queries:
            response = self.client.get(url, **self.auth)
        self.assertEqual(response.status_code, 200, response.content)
        return len(queries), response.json()

    def test_a_page_of_messages_costs_the_same_queries_whatever_its_size(self):
        """Recipients are prefetched: a page of 20 messages takes as many queries as a page of 1."""
        self.client.get("/api/messages", **self.auth)  # the key's first use records it (a write)
        add_messages(1)
        one, body = self.queries_for("/api/messages")
        self.assertEqual(len(body["items"]), 1)
        add_messages(19, start=1)
        twenty, body = self.queries_for("/api/messages")
        self.assertEqual(len(body["items"]), 20)
        self.assertEqual(body["items"][0]["to"], ["to19@example.com"])
        self.assertEqual(one, twenty)
        self.assertLessEqual(twenty, 4)  # the key, the count, the page, its recipients
