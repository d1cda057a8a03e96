"""The AWS stand-in: moto's IoT backend plus certificate transfers between accounts,
fault injection and call counters. Call :func:`install` before using moto (decorator or
server mode); ``python -m standin.server`` serves it over HTTP."""

from . import connectivity, jobs, things
from .iot import EXTENSIONS, install, installed

EXTENSIONS.extend([things.install, jobs.install, connectivity.install])

__all__ = ["install", "installed"]
