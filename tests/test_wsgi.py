"""The web process's start (portal/wsgi.py): what it loads is frozen out of the collector."""

import gc
import importlib
import sys


def test_loading_the_wsgi_module_freezes_what_is_loaded():
    gc.unfreeze()
    try:
        if "portal.wsgi" in sys.modules:
            importlib.reload(sys.modules["portal.wsgi"])
        else:
            importlib.import_module("portal.wsgi")
        assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()
