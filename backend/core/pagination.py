from functools import lru_cache

from drf_spectacular.utils import OpenApiParameter, inline_serializer
from rest_framework import serializers
from rest_framework.pagination import PageNumberPagination


class Pagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 500


PAGE_PARAMETERS = [
    OpenApiParameter("page", int, description="page number, from 1"),
    OpenApiParameter("page_size", int, description=f"items per page (default 50, at most {Pagination.max_page_size})"),
]


@lru_cache(maxsize=None)
def paginated(serializer_class):
    """The OpenAPI schema of one page of ``serializer_class`` as Pagination answers it."""
    name = serializer_class.__name__.removesuffix("Serializer")
    return inline_serializer(f"Paginated{name}List", fields={
        "count": serializers.IntegerField(min_value=0),
        "next": serializers.URLField(allow_null=True),
        "previous": serializers.URLField(allow_null=True),
        "results": serializer_class(many=True),
    })
