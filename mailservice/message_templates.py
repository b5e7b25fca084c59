"""A message's templates (docs/templates.md), checked for validation.check_message: one stored in
the gateway (`template`, filled with `template_data`, in the `language` asked for), rendered when
the message is accepted so that whichever provider of the chain takes it receives the same
finished mail; or one stored at ESPs (`template_id`), which only the providers holding it can
send, each under its own id."""

from __future__ import annotations

from typing import Any

from failover.exceptions import FailoverConfigurationError
from failover.providers import load_providers
from mailservice.exceptions import FieldError, InvalidRequest, TemplateError, TemplateNotFound
from mailservice.headers import single_line
from mailservice.schemas import MessageIn
from mailservice.services.templates import RenderedTemplate, template_identity, template_render

# A message's own content, which a message with `template` takes from the template instead.
OWN_CONTENT = ("subject", "text", "html")
ESP_MAP_EXAMPLE = '{"sendgrid": "d-13b8f94f", "mailgun": "welcome"}'


def chain_providers() -> list[str] | None:
    """The names of the gateway's providers, in chain order; None when the chain cannot be read.
    A message is then accepted without checking its template_id against the chain: delivery
    defers every message until the chain is fixed, and checks the names again then."""
    try:
        return [provider.name for provider in load_providers()]
    except FailoverConfigurationError:
        return None


def check_template_id(value: str | dict[str, str] | None, errors: list[FieldError]) -> Any:
    """The template_id to store: one id, accepted only when the chain has a single provider (an
    ESP names a template its own way, so one id cannot serve a failover), or one id per
    provider, each provider one of the chain's. An empty string is no template id (None)."""
    if not value and not isinstance(value, dict):
        return None
    providers = chain_providers()
    if isinstance(value, str):
        single_line(value, "template_id", errors)
        if providers is not None and len(providers) > 1:
            errors.append(
                FieldError(
                    "template_id",
                    "One template id is accepted only when the gateway has one provider: each ESP "
                    "stores a template under its own id, and this gateway fails over between "
                    f"{', '.join(providers)}. Give the id at each provider that has the template, "
                    f"as an object such as {ESP_MAP_EXAMPLE}; the message then goes only to those "
                    "providers, in the chain's order.",
                )
            )
        return value
    if not value:
        errors.append(
            FieldError("template_id", f"Name at least one provider and its template id: {ESP_MAP_EXAMPLE}.")
        )
    for name, esp_id in value.items():
        path = f"template_id.{name}"
        if providers is not None and name not in providers:
            errors.append(
                FieldError(path, f"Not a provider of this gateway; its providers are {', '.join(providers)}.")
            )
        elif not esp_id:
            errors.append(FieldError(path, "Give this provider's template id, or leave the provider out."))
        else:
            single_line(esp_id, path, errors)
    return dict(value)


def check_template_fields(data: MessageIn, errors: list[FieldError]) -> None:
    """What can be said of `template` without reading it: its name and language are well
    formed, the message gives no content of its own and no ESP template besides, and
    `template_data` and `language` come only with a template."""
    if data.template is None:
        if data.template_data is not None:
            errors.append(
                FieldError(
                    "template_data",
                    "template_data fills a template stored in the gateway: give `template` too. "
                    "(An ESP's template, `template_id`, takes merge_global_data and merge_data.)",
                )
            )
        if data.language is not None:
            errors.append(
                FieldError("language", "language chooses the translation of `template`: give it too.")
            )
        return
    try:
        template_identity(name=data.template, language=data.language or "")
    except InvalidRequest as err:
        errors.extend(_as_message_fields(err.errors))
    for name in OWN_CONTENT:
        if getattr(data, name) is not None:
            errors.append(
                FieldError(
                    name, f"A message with `template` takes its {name} from the template: leave it out."
                )
            )
    if data.template_id is not None:
        errors.append(
            FieldError(
                "template_id",
                "Give `template` (stored in the gateway) or `template_id` (stored at an ESP), not both.",
            )
        )


def render_template(data: MessageIn) -> RenderedTemplate:
    """The message's content rendered from its template, for a request that passed every other
    check (rendering is the costly one). InvalidRequest: on `template` when no template has its
    name in its language or a fallback; on `template_data.<path>` for a variable the data lacks;
    on the part for a render limit or a rendered subject that is not one line."""
    try:
        return template_render(
            name=data.template or "", language=data.language or "", data=data.template_data or {}
        )
    except TemplateNotFound as err:
        raise InvalidRequest([FieldError("template", str(err))]) from None
    except TemplateError:
        raise
    except InvalidRequest as err:  # the name or the language, checked before; here for safety
        raise InvalidRequest(_as_message_fields(err.errors)) from None


def _as_message_fields(errors: list[FieldError]) -> list[FieldError]:
    """Errors on a template's `name` are on the message's `template`."""
    return [FieldError("template", error.message) if error.field == "name" else error for error in errors]
