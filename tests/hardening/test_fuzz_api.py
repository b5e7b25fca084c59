"""No 5xx under fuzzing, and every answer as the OpenAPI schema documents it (docs/security.md,
"Input limits").

schemathesis reads /api/openapi.json from the WSGI app and generates requests for every
operation, valid ones (positive) and ones the schema forbids (negative), sent with a key that
has every scope. Each answer must not be a 5xx, must have a documented status code and content
type, and must match the documented response schema. Deterministic (derandomized, no example
database); the budget keeps the file well under a minute and a half on two cores.
"""

from __future__ import annotations

import logging
import time
import uuid

import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.test import TestCase
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from mailservice.models.keys import SCOPES
from mailservice.services.keys import api_key_create
from smtest.environment import tasks_settings
from smtest.wsgi import application
from tests.mailservice.helpers import gateway_settings

# Examples per operation and generation mode: 14 operations positive and the 10 with a query or
# a body negative, 75 each: about 1,700 requests, 20-40 s on two cores.
EXAMPLES = 75
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@gateway_settings(
    MAILSERVICE_API_RATE_LIMIT="0",  # the fuzz run sends far more than any per-key limit
    TASKS=tasks_settings("dummy"),  # accepted messages are never delivered
    ALLOWED_HOSTS=["*"],  # the WSGI client's host
)
class FuzzApiTests(TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # Requests go straight to the WSGI app, not through Django's test client, so keep the
        # end of each request from closing the test's connection (as the test client does).
        request_started.disconnect(close_old_connections)
        request_finished.disconnect(close_old_connections)

    @classmethod
    def tearDownClass(cls):
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        _, raw_key = api_key_create(name=f"fuzz-{uuid.uuid4().hex[:6]}", scopes=SCOPES)
        self.headers = {"Authorization": f"Bearer {raw_key}"}

    def test_every_operation_answers_as_documented_and_never_5xx(self):
        """Every operation, positive and negative examples: no 5xx, documented status codes,
        content types and bodies."""
        schema = schemathesis.openapi.from_wsgi("/api/openapi.json", application)
        # Every request carries the key: the budget goes to the inputs, not to leaving the key
        # out (401s are tested in tests/mailservice/test_auth.py).
        schema.config.generation.update(with_security_parameters=False)
        operations = [result.ok() for result in schema.get_all_operations()]
        self.assertGreaterEqual(len(operations), 7, [op.label for op in operations])
        statuses: dict[int, int] = {}
        started = time.monotonic()
        runs = 0
        logging.disable(logging.WARNING)  # hundreds of expected 4xx; a 5xx's ERROR still shows
        self.addCleanup(logging.disable, logging.NOTSET)
        for operation in operations:
            # Negative inputs need something the schema constrains: a query or a body (a path's
            # string parameter takes any string).
            negatable = len(operation.query) > 0 or len(operation.body) > 0
            for mode in (
                (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
                if negatable
                else (GenerationMode.POSITIVE,)
            ):
                runs += 1
                with self.subTest(operation=operation.label, mode=mode.value):
                    self._fuzz(operation, mode, statuses)
        examples = sum(statuses.values())
        server_errors = sum(count for status, count in statuses.items() if status >= 500)
        print(
            f"\nfuzz: {len(operations)} operations, {examples} examples, {server_errors} 5xx, "
            f"{time.monotonic() - started:.1f} s; statuses {dict(sorted(statuses.items()))}"
        )
        self.assertEqual(server_errors, 0)
        self.assertGreaterEqual(examples, runs * EXAMPLES * 3 // 4)

    def _fuzz(self, operation, mode: GenerationMode, statuses: dict[int, int]) -> None:
        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.explicit, Phase.generate, Phase.shrink],
            suppress_health_check=list(HealthCheck),
        )
        def run(case):
            response = case.call(headers=self.headers)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            case.validate_response(response, checks=CHECKS, headers=self.headers)

        run()
