"""The image's HEALTHCHECK (Containerfile): in a web container, GET /health/ from gunicorn.

Healthy is a 200: database, broker, a recent worker heartbeat and AWS all answer
(docs/deploy.md, "/health/"). The same image runs worker and beat, which serve no HTTP:
there it answers healthy, as their health shows on web's /health/ (the heartbeat goes
through beat, Redis and a worker).

It asks as a client from outside would: the first of ALLOWED_HOSTS as Host, and behind
HTTPS=true the X-Forwarded-Proto a TLS proxy sets; settings are read as portal/settings.py
reads them (portal/env.py).
"""

import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from portal import env  # noqa: E402


def serves_web() -> bool:
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if b"gunicorn" in cmdline.read_bytes():
                return True
        except OSError:
            continue  # the process ended meanwhile
    return False


def main() -> int:
    if not serves_web():
        print("no web process in this container: its health shows on web's /health/")
        return 0
    # gunicorn's address (deploy/entrypoint.sh); one on every interface answers on loopback.
    host, _, port = os.environ.get("WEB_BIND", ":8000").rpartition(":")
    if host in ("", "0.0.0.0", "[::]"):  # noqa: S104 - read, not bound
        host = "127.0.0.1"
    names = [n.lstrip(".") for n in env.strings("ALLOWED_HOSTS", ["localhost"]) if n != "*"]
    headers = {"Host": names[0] if names else "localhost"}
    if env.boolean("HTTPS", False):
        headers["X-Forwarded-Proto"] = "https"
    request = urllib.request.Request(f"http://{host}:{port}/health/", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=8) as response:  # noqa: S310
            print(response.status, response.read(200).decode(errors="replace"))
            return 0
    except urllib.error.HTTPError as error:
        print(error.code, error.read(200).decode(errors="replace"))
    except OSError as error:
        print(f"/health/ did not answer: {error}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
