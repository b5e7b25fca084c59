"""The receiving side of one provider's send endpoint: faults first, then the provider's own
checks, then the answer.

The order follows a real provider: a broken provider (injected fault) answers with its error
whatever the request; a healthy one checks the key, then the request (Mailgun's domain,
required fields), then the recipients; an accepted message is stored and its tracking
webhooks scheduled. Every request that reaches an endpoint is stored, whatever the answer.
"""

from __future__ import annotations

import logging
import threading

from sandbox.conventions import fate_of
from sandbox.faults import Action, FaultBoard
from sandbox.providers.base import Provider, ProviderAnswer
from sandbox.store import MessageStore, ReceivedMessage, ReplyKind
from sandbox.webhooks import WebhookDispatcher
from sandbox.wire import ApiRequest, ApiResponse, Reply

logger = logging.getLogger(__name__)


class SendEndpoint:
    """The HTTP application behind one provider's port."""

    def __init__(
        self,
        provider: Provider,
        *,
        faults: FaultBoard,
        store: MessageStore,
        webhooks: WebhookDispatcher,
        stopping: threading.Event,
    ):
        self.provider = provider
        self.faults = faults
        self.store = store
        self.webhooks = webhooks
        self.stopping = stopping

    def __call__(self, request: ApiRequest) -> Reply:
        provider = self.provider
        endpoint = provider.endpoint(request)
        if endpoint is None:
            return Reply(provider.not_found(request))
        if request.method != "POST":
            return Reply(ApiResponse.json(405, {"message": "Method Not Allowed"}, {"Allow": "POST"}))
        decision = self.faults.decide(provider.name)
        if decision.action is Action.REFUSE_CONNECTION:
            # Only reachable in the instant between "down" and the listener closing.
            return Reply(None)
        if decision.delay:
            self.stopping.wait(decision.delay)
        hold = decision.hold if decision.action is Action.TIMEOUT else 0.0
        try:
            message = provider.parse(request, endpoint)
            malformed: ApiResponse | None = None
        except ProviderAnswer as answer:
            message = ReceivedMessage(provider=provider.name, endpoint=endpoint)
            malformed = answer.response
        message.fault = decision.label

        if decision.action is Action.ERROR:
            assert decision.status is not None
            error = provider.error(decision.status, decision.retry_after)
            return self._finish(message, error, ReplyKind.ERROR, hold)
        if decision.action is Action.AUTH:
            return self._finish(message, provider.unauthorized(), ReplyKind.ERROR, hold)
        if malformed is not None:
            return self._finish(message, malformed, ReplyKind.ERROR, hold)
        refusal = provider.authenticate(request, message) or provider.validate(request, message)
        if refusal is not None:
            return self._finish(message, refusal, ReplyKind.ERROR, hold)

        for recipient in message.recipients:
            recipient.fate = fate_of(recipient.email, decision.reject)
        refused = [recipient for recipient in message.recipients if recipient.refused]
        if refused:
            refusal = provider.refuse_recipients(message, refused)
            if refusal is not None:
                return self._finish(message, refusal, ReplyKind.REFUSED, hold)
        response = provider.accept(message)
        if not message.deliverable():
            outcome = ReplyKind.REFUSED
        elif decision.action is Action.TIMEOUT:
            # The provider took the message; only its answer is lost. So it is sent, and its
            # webhooks come back: exactly what makes a read timeout ambiguous.
            outcome = ReplyKind.TIMEOUT
        else:
            outcome = ReplyKind.ACCEPTED
        reply = self._finish(message, response, outcome, hold)
        self.webhooks.schedule(message)
        return reply

    def _finish(
        self, message: ReceivedMessage, response: ApiResponse, outcome: ReplyKind, hold: float
    ) -> Reply:
        message.outcome = outcome
        message.status_code = response.status
        self.store.add(message)
        logger.info(
            "sandbox send provider=%s outcome=%s status=%s recipients=%d fault=%s",
            message.provider,
            outcome,
            response.status,
            len(message.recipients),
            message.fault or "none",
            extra={
                "provider": message.provider,
                "outcome": str(outcome),
                "status": response.status,
                "provider_message_id": message.provider_message_id,
                "sandbox_id": message.id,
            },
        )
        return Reply(response, hold=hold)
