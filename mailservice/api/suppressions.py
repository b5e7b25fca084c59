"""GET/POST /api/suppressions and DELETE /api/suppressions/{address}."""

# No `from __future__ import annotations` here: ninja reads the paginated views' annotations
# through @paginate's wrapper, whose module cannot resolve names given as strings.
from django.http import HttpRequest, HttpResponse
from ninja import Query, Router, Status
from ninja.pagination import paginate

from mailservice import selectors
from mailservice.addresses import AddressError, parse_address
from mailservice.api.auth import ApiKeyAuth
from mailservice.api.pagination import Pagination
from mailservice.exceptions import FieldError, InvalidRequest, NotFound
from mailservice.schemas import ErrorsOut, SuppressionFilters, SuppressionIn, SuppressionOut
from mailservice.services.suppressions import suppression_add, suppression_remove

# Listing and changing the suppression list needs the manage scope (docs/api.md).
router = Router(tags=["suppressions"], auth=ApiKeyAuth("manage"))
ERRORS = dict.fromkeys((400, 401, 403, 404, 413, 422, 429), ErrorsOut)


@router.get("/suppressions", response={200: list[SuppressionOut], **ERRORS}, summary="The suppression list")
@paginate(Pagination)
def list_suppressions(request: HttpRequest, filters: Query[SuppressionFilters]):
    return selectors.suppression_list(**filters.model_dump())


@router.post(
    "/suppressions",
    response={200: SuppressionOut, 201: SuppressionOut, **ERRORS},
    summary="Suppress an address (201; 200 when it already was)",
)
def add_suppression(request: HttpRequest, payload: SuppressionIn):
    try:
        address = parse_address(payload.address)
    except AddressError as err:
        raise InvalidRequest([FieldError("address", str(err))]) from None
    suppression, created = suppression_add(address=address.addr_spec, reason=payload.reason)
    return Status(201 if created else 200, suppression)


@router.delete(
    "/suppressions/{address}",
    response={204: None, **ERRORS},
    summary="Remove an address from the suppression list",
)
def delete_suppression(request: HttpRequest, address: str):
    # No stored address holds a NUL (PostgreSQL refuses one in a query: a 500, not a 404).
    if "\x00" in address or not suppression_remove(address=address):
        raise NotFound([FieldError(None, "This address is not on the suppression list.")])
    return HttpResponse(status=204)
