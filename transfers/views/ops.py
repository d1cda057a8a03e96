"""Operations endpoints: /health/ for probes and monitoring, /metrics/ for Prometheus."""

from __future__ import annotations

import contextlib
import hmac
import os

import prometheus_client
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_safe
from prometheus_client import multiprocess

from transfers import health as checks
from transfers.metrics import COLLECTOR

# Register the database gauges once, next to django-prometheus's request metrics.
with contextlib.suppress(ValueError):  # already registered (module imported twice)
    prometheus_client.REGISTRY.register(COLLECTOR)


def _has_token(request: HttpRequest) -> bool:
    token = settings.METRICS_TOKEN
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return (
        bool(token)
        and scheme.lower() == "bearer"
        and hmac.compare_digest(given.strip().encode(), token.encode())
    )


def _is_staff(request: HttpRequest) -> bool:
    return request.user.is_authenticated and request.user.is_staff


@never_cache
@require_safe
def health(request: HttpRequest) -> JsonResponse:
    """200 when every check passes, 503 otherwise. Anyone sees the status; staff (or the
    metrics token) also see each check, because details name hosts and accounts."""
    results = checks.run_checks()
    healthy = all(r.ok for r in results)
    body: dict = {"status": "ok" if healthy else "error"}
    if _is_staff(request) or _has_token(request):
        body["checks"] = {r.name: r.as_dict() for r in results}
        body["sweep_failures"] = checks.recent_sweep_failures()
    return JsonResponse(body, status=200 if healthy else 503)


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    if not (_has_token(request) or _is_staff(request)):
        if request.user.is_authenticated:
            return HttpResponse("Staff only.\n", status=403, content_type="text/plain")
        refused = HttpResponse("Authentication required.\n", status=401, content_type="text/plain")
        refused["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return refused
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        # Several gunicorn workers: add up what each process wrote to the shared folder.
        registry = prometheus_client.CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        registry.register(COLLECTOR)
    else:
        registry = prometheus_client.REGISTRY
    return HttpResponse(
        prometheus_client.generate_latest(registry),
        content_type=prometheus_client.CONTENT_TYPE_LATEST,
    )
