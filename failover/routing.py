"""Which providers one message may use, and the ESP template id it sends to each
(docs/failover.md, "Choosing providers per message").

A message says so with its `failover_providers` attribute: a sequence of provider names, or a
mapping of provider names to ESP template ids (None: the message's own `template_id`). Templates
stored at an ESP exist only there, so a message using them can go only to the providers that
have them, each under its own id.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager

from django.core.mail import EmailMessage

from failover.exceptions import UnknownProvider

# The providers one message may use, each with the ESP template id it sends there (None: the
# message's own `template_id`, if it has one).
Route = dict[str, str | None]
_ABSENT = object()


def message_route(message: EmailMessage, known: Collection[str]) -> Route | None:
    """The message's route, or None when it may use every provider; UnknownProvider when it
    names a provider not in `known` (the chain's names) or none at all. A single name given as
    a string is one provider."""
    wanted = getattr(message, "failover_providers", None)
    if wanted is None:
        return None
    if isinstance(wanted, str):
        wanted = [wanted]
    if isinstance(wanted, Mapping):
        route = {str(name): None if esp_id is None else str(esp_id) for name, esp_id in wanted.items()}
    else:
        route = dict.fromkeys(str(name) for name in wanted)
    unknown = [name for name in route if name not in known]
    if unknown or not route:
        raise UnknownProvider(unknown, known=list(known))
    return route


def batch_routes(
    messages: Sequence[EmailMessage], known: Collection[str], *, fail_silently: bool
) -> list[Route | None | UnknownProvider]:
    """Each message's route, all read before any message of the batch is sent: a name the chain
    lacks raises UnknownProvider at once, or, with fail_silently, stands in for that message's
    route so that only it is left unsent."""
    routes: list[Route | None | UnknownProvider] = []
    for message in messages:
        try:
            routes.append(message_route(message, known))
        except UnknownProvider as error:
            if not fail_silently:
                raise
            routes.append(error)
    return routes


def restrict(order: list[str], probe: str | None, route: Route | None) -> tuple[list[str], str | None]:
    """The chain's order and due probe as one message may use them: a message kept to some
    providers tries them in the chain's order, and never spends a probe on another one."""
    if route is None:
        return order, probe
    return [name for name in order if name in route], probe if probe in route else None


@contextmanager
def esp_template(message: EmailMessage, route: Route | None, provider: str) -> Iterator[None]:
    """While one provider is asked, the message carries that provider's template id; afterwards
    its own again, so the next provider never gets this one's id."""
    esp_id = route.get(provider) if route else None
    if esp_id is None:
        yield
        return
    own = getattr(message, "template_id", _ABSENT)
    message.template_id = esp_id
    try:
        yield
    finally:
        if own is _ABSENT:
            del message.template_id
        else:
            message.template_id = own
