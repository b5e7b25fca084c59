"""GET/POST /api/suppressions and DELETE /api/suppressions/{address}."""
from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from ninja import Field, Query, Router, Schema, Status

from mailservice import selectors
from mailservice.addresses import AddressError, parse_address
from mailservice.exceptions import FieldError, InvalidRequest, NotFound
from mailservice.schemas import ErrorsOut, SuppressionIn, SuppressionOut
from mailservice.services import suppression_add, suppression_remove

router = Router(tags=["suppressions"])
ERRORS = {code: ErrorsOut for code in (400, 401, 404, 413, 422)}


class SuppressionFilters(Schema):
    address: str | None = Field(None, description="Only this address.")
    limit: int = Field(50, ge=1, le=200)
    offset: int = Field(0, ge=0)


class SuppressionPage(Schema):
    count: int
    limit: int
    offset: int
    items: list[SuppressionOut]


@router.get("/suppressions", response={200: SuppressionPage, **ERRORS}, summary="The suppression list")
def list_suppressions(request: HttpRequest, filters: Query[SuppressionFilters]):
    suppressions = selectors.suppression_list(address=filters.address)
    return {
        "count": suppressions.count(),
        "limit": filters.limit,
        "offset": filters.offset,
        "items": list(suppressions[filters.offset : filters.offset + filters.limit]),
    }


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
    if not suppression_remove(address=address):
        raise NotFound([FieldError(None, "This address is not on the suppression list.")])
    return HttpResponse(status=204)
