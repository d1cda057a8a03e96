"""WSGI entry point: gunicorn portal.wsgi."""

import gc
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
application = get_wsgi_application()


def settle() -> None:
    """Import every view now, then take what is loaded out of the garbage collector's
    way (gc.freeze): the modules, classes and URL patterns of a Django process live as
    long as it does, yet each full collection walked them all, 40-60 ms every 150 or so
    requests, a page's whole budget (docs/benchmarks.md §1: 4-8 ms once frozen)."""
    from django.urls import get_resolver

    get_resolver().url_patterns  # noqa: B018 - loads the URLconf and every views module
    gc.collect()
    gc.freeze()


settle()
