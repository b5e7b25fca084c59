"""GET /api/providers: the failover chain as every process sharing the cache sees it."""

from __future__ import annotations

from django.http import HttpRequest
from ninja import Router

from failover.exceptions import FailoverConfigurationError
from mailservice import selectors
from mailservice.api.auth import ApiKeyAuth
from mailservice.exceptions import FieldError, RequestRejected
from mailservice.schemas import ErrorsOut, ProviderOut

router = Router(tags=["providers"], auth=ApiKeyAuth("manage"))


@router.get(
    "/providers",
    response={200: list[ProviderOut], **dict.fromkeys((401, 403, 429, 503), ErrorsOut)},
    summary="Each provider's state (active, standby, failing) and last error",
)
def list_providers(request: HttpRequest):
    try:
        return selectors.provider_states()
    except FailoverConfigurationError as err:
        raise RequestRejected(
            [FieldError(None, f"The provider chain is misconfigured: {err}")], status=503
        ) from err
