"""The AWS stand-in: moto's IoT backend plus certificate transfers between accounts,
fault injection and call counters. Call :func:`install` before using moto (decorator or
server mode); ``python -m standin.server`` serves it over HTTP."""

from .iot import install, installed

__all__ = ["install", "installed"]
