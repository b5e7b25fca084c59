"""Batches share connections; many threads sending at once each send every message exactly once."""

import json
import threading
from collections import Counter, defaultdict
from unittest import mock

import requests
from anymail.backends.sendgrid import EmailBackend as SendGridBackend
from anymail.exceptions import AnymailRequestsAPIError

from tests.failover.base import FailoverTestCase


class BatchTests(FailoverTestCase):
    def test_batch_counts_each_message_sent(self):
        """send_messages returns how many messages some provider took."""
        messages = [self.message(subject=f"m{i}") for i in range(4)]
        self.assertEqual(self.send(*messages), 4)
        self.assertEqual([m.failover_provider for m in messages], ["sendgrid"] * 4)

    def test_batch_opens_each_inner_backend_once(self):
        """One requests.Session per provider per batch, however many messages."""
        with mock.patch.object(
            SendGridBackend, "create_session", autospec=True, side_effect=lambda self: requests.Session()
        ) as create:
            self.send(*[self.message(subject=f"m{i}") for i in range(5)])
        self.assertEqual(create.call_count, 1)

    def test_explicitly_opened_connection_is_reused_across_batches(self):
        """Within `with connection:` inner backends stay open between send_messages calls."""
        connection = self.connection()
        with mock.patch.object(
            SendGridBackend, "create_session", autospec=True, side_effect=lambda self: requests.Session()
        ) as create:
            with connection:
                connection.send_messages([self.message()])
                connection.send_messages([self.message()])
        self.assertEqual(create.call_count, 1)

    def test_batch_switches_provider_mid_batch_without_retrying_the_dead_one(self):
        """When the primary dies mid-batch, the rest of the batch goes straight to the working one."""
        self.esp.down("sendgrid")
        messages = [self.message(subject=f"m{i}") for i in range(3)]
        self.assertEqual(self.send(*messages), 3)
        self.assertEqual(self.esp.calls("sendgrid"), 1)
        self.assertEqual(self.esp.calls("mailgun"), 3)

    def test_message_error_in_a_batch_stops_the_batch(self):
        """A refused message raises like any Django backend; earlier messages stay sent."""
        calls = {"n": 0}

        def second_is_bad(request):
            calls["n"] += 1
            return (400, {}, '{"errors": [{"message": "bad"}]}') if calls["n"] == 2 else (202, {}, "")

        self.esp.behaviour["sendgrid"] = second_is_bad
        messages = [self.message(subject=f"m{i}") for i in range(3)]
        with self.assertRaises(AnymailRequestsAPIError):
            self.send(*messages)
        self.assertEqual(messages[0].failover_provider, "sendgrid")
        self.assertIsNone(messages[1].failover_provider)
        self.assertEqual(self.esp.calls("mailgun"), 0)

    def test_empty_batch_sends_nothing(self):
        """An empty list returns 0 without touching any provider."""
        self.assertEqual(self.connection().send_messages([]), 0)
        self.assertEqual(self.esp.total_calls(), 0)

    def test_message_without_recipients_is_not_sent(self):
        """A message with no recipient counts as not sent and reaches no provider."""
        message = self.message()
        message.to = []
        self.assertEqual(self.send(message), 0)
        self.assertEqual(self.esp.total_calls(), 0)


class ThreadTests(FailoverTestCase):
    def test_concurrent_threads_send_every_message_exactly_once(self):
        """8 threads × 25 messages through one shared backend: 200 sends, each subject once."""
        subjects = Counter()
        lock = threading.Lock()

        def record(request):
            with lock:
                subjects[json.loads(request.body)["subject"]] += 1
            return 202, {}, ""

        self.esp.behaviour["sendgrid"] = record
        threads_by_session = defaultdict(set)
        keep_alive = []  # so no session id is recycled during the test
        original_request = requests.Session.request

        def tracking_request(session, *args, **kwargs):
            with lock:
                keep_alive.append(session)
                threads_by_session[id(session)].add(threading.get_ident())
            return original_request(session, *args, **kwargs)

        connection = self.connection()
        failures = []

        def worker(thread_no):
            try:
                for i in range(25):
                    connection.send_messages([self.message(subject=f"t{thread_no}-m{i}")])
            except Exception as err:  # pragma: no cover - reported below
                failures.append(err)

        with mock.patch.object(requests.Session, "request", tracking_request):
            threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=60)
        self.assertEqual(failures, [])
        self.assertEqual(len(subjects), 200)
        self.assertEqual(set(subjects.values()), {1})
        # No requests.Session is ever used by two threads.
        self.assertEqual({len(threads) for threads in threads_by_session.values()}, {1})

    def test_threads_with_a_dead_primary_still_send_each_message_once(self):
        """With the primary down, concurrent senders fail over and nothing is sent twice."""
        self.esp.down("sendgrid")
        connection = self.connection()
        messages = [[self.message(subject=f"t{t}-m{i}") for i in range(10)] for t in range(4)]

        def worker(batch):
            connection.send_messages(batch)

        threads = [threading.Thread(target=worker, args=(batch,)) for batch in messages]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        sent = [m for batch in messages for m in batch]
        self.assertEqual(Counter(m.failover_provider for m in sent), Counter({"mailgun": 40}))
        self.assertEqual(self.esp.calls("mailgun"), 40)
