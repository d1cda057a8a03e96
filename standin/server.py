"""Serve the stand-in over HTTP: moto's server app plus control endpoints.

    python -m standin.server [--host 127.0.0.1] [--port 5000]

The default port comes from ``AWS_STANDIN_PORT`` (else 5000). Point boto3 at it with
``endpoint_url="http://127.0.0.1:5000"``. Control endpoints (JSON):

* ``GET  /_standin/health``          -> ``{"status": "ok", ...}``
* ``GET  /_standin/calls``           -> the counters (see :func:`standin.control.calls`)
* ``POST /_standin/reset-counters``  -> ``{"status": "ok"}``
* ``GET  /_standin/faults``          -> the fault configuration
* ``POST /_standin/faults``          body ``{"throttle_rate": 0.2, "unavailable_rate": 0.1,
  "operations": [...] | null, "rps_per_account": 10 | null, "rps_per_operation": 10 | "aws" |
  null, "seed": 1}`` replaces the
  configuration (omitted keys are off; ``{}`` clears); answers the new configuration, or 400.
* ``GET  /_standin/devices[?thing=name]`` -> the simulated devices, brought up to now
  (see :func:`standin.control.devices`)
* ``POST /_standin/devices``         body: the device settings (``{"enabled": true,
  "drop_after_seconds": 2, "backoff_base_seconds": 0.5, ...}``, see
  ``standin.devices.DeviceSettings``; omitted keys take their defaults); answers them, or 400.
* moto's ``POST /moto-api/reset`` also clears counters, faults and devices (see
  :func:`standin.install`).
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import urllib.parse
from collections.abc import Callable, Iterable
from typing import Any

from moto import __version__ as moto_version
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import BaseWSGIServer, make_server, run_simple

from . import control, install
from .faults import COUNTERS, FAULTS

CONTROL_PREFIX = "/_standin/"
DEFAULT_PORT = 5000

StartResponse = Callable[..., Any]


def _json(start_response: StartResponse, status: str, payload: Any) -> Iterable[bytes]:
    body = json.dumps(payload).encode("utf-8")
    start_response(
        status,
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
    )
    return [body]


def _read_json(environ: dict[str, Any]) -> Any:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    raw = environ["wsgi.input"].read(length) if length > 0 else b""
    return json.loads(raw) if raw.strip() else {}


class ControlMiddleware:
    """WSGI middleware answering ``/_standin/*`` and passing everything else to moto."""

    def __init__(self, app: Callable[[dict[str, Any], StartResponse], Iterable[bytes]]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET").upper()
        if path.startswith(CONTROL_PREFIX):
            return self.control(
                path[len(CONTROL_PREFIX) :].strip("/"), method, environ, start_response
            )
        return self.app(environ, start_response)

    def control(
        self, name: str, method: str, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes]:
        if name == "health" and method == "GET":
            return _json(start_response, "200 OK", {"status": "ok", "moto": moto_version})
        if name == "calls" and method == "GET":
            return _json(start_response, "200 OK", COUNTERS.snapshot())
        if name == "reset-counters" and method == "POST":
            COUNTERS.reset()
            return _json(start_response, "200 OK", {"status": "ok"})
        if name == "faults" and method == "GET":
            return _json(start_response, "200 OK", FAULTS.config.to_dict())
        if name == "faults" and method == "POST":
            try:
                config = _read_json(environ)
                if not isinstance(config, dict):
                    raise ValueError("the body must be a JSON object")
                FAULTS.configure(config)
            except ValueError as error:  # includes json.JSONDecodeError
                return _json(start_response, "400 Bad Request", {"error": str(error)})
            return _json(start_response, "200 OK", FAULTS.config.to_dict())
        if name == "devices" and method == "GET":
            query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
            thing = (query.get("thing") or [None])[0]
            return _json(start_response, "200 OK", control.devices(thing))
        if name == "devices" and method == "POST":
            try:
                settings = _read_json(environ)
                if not isinstance(settings, dict):
                    raise ValueError("the body must be a JSON object")
                answer = control.configure_devices(**settings)
            except (ValueError, TypeError) as error:
                return _json(start_response, "400 Bad Request", {"error": str(error)})
            return _json(start_response, "200 OK", answer)
        if name in ("health", "calls", "reset-counters", "faults", "devices"):
            return _json(start_response, "405 Method Not Allowed", {"error": "method not allowed"})
        return _json(start_response, "404 Not Found", {"error": f"no control endpoint {name!r}"})


def make_app() -> ControlMiddleware:
    """moto's server application with the stand-in installed and the control endpoints."""
    install()
    return ControlMiddleware(DomainDispatcherApplication(create_backend_app))


class StandinServer:
    """The stand-in served on a background thread (``port=0`` picks a free port)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server: BaseWSGIServer = make_server(
            host, port, make_app(), threaded=True, request_handler=MotoRequestHandler
        )
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> StandinServer:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # stop() returns in 50 ms, not 0.5 s
            name="standin-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m standin.server",
        description="Serve the AWS stand-in (moto + IoT transfers).",
    )
    parser.add_argument("-H", "--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument(
        "-p",
        "--port",
        type=int,
        default=int(os.environ.get("AWS_STANDIN_PORT") or DEFAULT_PORT),
        help="port (AWS_STANDIN_PORT, else 5000)",
    )
    args = parser.parse_args(argv)
    # moto builds some URLs (e.g. SQS queue URLs) from MOTO_PORT, as its own server does.
    os.environ.setdefault("MOTO_PORT", str(args.port))
    run_simple(
        args.host,
        args.port,
        make_app(),
        threaded=True,
        request_handler=MotoRequestHandler,
    )


if __name__ == "__main__":
    main()
