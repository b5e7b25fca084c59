"""The lists' pagination: django-ninja's limit/offset, with the page the API has always answered
(docs/api.md): `{"count": total, "limit", "offset", "items"}`."""

from typing import Any

from django.db.models import QuerySet
from django.http import HttpRequest
from ninja import Schema
from ninja.pagination import LimitOffsetPagination
from pydantic import Field

# The largest offset the databases take (a signed 64-bit integer); beyond it the answer is 422,
# not a database error (docs/security.md, "Input limits").
MAX_OFFSET = 2**63 - 1


class PageQuery(Schema):
    limit: int = Field(50, ge=1, le=200)
    offset: int = Field(0, ge=0, le=MAX_OFFSET)


class Pagination(LimitOffsetPagination):
    """Used as `@paginate(Pagination)` on a view that returns a queryset and declares
    `response={200: list[ItemOut]}`; ninja names the page `Paged<ItemOut>`."""

    Input = PageQuery

    class Output(Schema):
        count: int
        limit: int
        offset: int
        items: list[Any]

    def paginate_queryset(
        self, queryset: QuerySet, pagination: PageQuery, request: HttpRequest, **params: Any
    ) -> dict[str, Any]:
        page = super().paginate_queryset(queryset, pagination, request, **params)
        # The limit applied: ninja caps it at NINJA_PAGINATION_MAX_LIMIT if that is set (it is not).
        return {**page, "limit": min(pagination.limit, self.max_limit), "offset": pagination.offset}
