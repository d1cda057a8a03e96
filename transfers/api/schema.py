"""How the OpenAPI schema describes every operation beyond what its view declares."""

from __future__ import annotations

from drf_spectacular import openapi
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter

# Every 429 (throttling.py) and every 503 (errors.py, AwsBusyMiddleware) carries it.
RETRY_AFTER = OpenApiParameter(
    "Retry-After",
    OpenApiTypes.INT,
    location=OpenApiParameter.HEADER,
    required=True,
    response=[429, 503],
    description="Seconds to wait before trying again.",
)


class AutoSchema(openapi.AutoSchema):
    """drf-spectacular's, with the Retry-After header on the 429 and 503 answers of each
    operation that documents them (errors.errors)."""

    def get_override_parameters(self):
        return [*super().get_override_parameters(), RETRY_AFTER]
