"""The JSON API (django-ninja): OpenAPI at /api/openapi.json, interactive docs at /api/docs."""

from ninja import NinjaAPI

from mailservice.api import errors
from mailservice.api.auth import ApiKeyAuth
from mailservice.api.messages import router as messages_router
from mailservice.api.parsing import GatewayParser
from mailservice.api.providers import router as providers_router
from mailservice.api.suppressions import router as suppressions_router
from mailservice.api.templates import router as templates_router

api = NinjaAPI(
    title="smtest gateway",
    version="1.0",
    description="Send email through the first working provider. Every call except the docs and "
    "this schema needs `Authorization: Bearer <key>` (`python manage.py create_api_key NAME "
    "--scopes send,read`). A key's scopes say what it may call: `send` (POST /api/messages, "
    "DELETE /api/messages/{id} to cancel what it sent, a template's preview), `read` "
    "(the messages it sent, templates and their preview), `manage` (every message, "
    "suppressions, providers, changing templates); a call outside "
    "them answers 403. Past `MAILSERVICE_API_RATE_LIMIT` a key gets 429 with `Retry-After`. "
    'Errors answer `{"errors": [{"field": "to[0]", "message": "..."}]}`. While the database is out '
    "of reach, every call answers 503 with `Retry-After`: retry the same request with the same "
    "`Idempotency-Key`.",
    # An operation that names no scope of its own is for `manage` keys only.
    auth=ApiKeyAuth("manage"),
    urls_namespace="api",
    parser=GatewayParser(),
)
errors.install(api)
api.add_router("", messages_router)
api.add_router("", providers_router)
api.add_router("", suppressions_router)
api.add_router("", templates_router)
