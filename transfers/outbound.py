"""Outbound HTTP to URLs that people type in (webhooks): public destinations only.

An admin types a webhook URL and the portal's workers POST to it. Unchecked, anyone who can
edit an account (or holds a stolen admin session) could make the portal reach loopback,
private networks or the cloud metadata service (169.254.169.254), and read the connection
errors on the transfer page as a port scanner. So a URL is checked when it is saved and again
when it is sent: its host is resolved, every address it resolves to must be public, and the
connection goes only to the address checked (requests-hardened resolves once, refuses private
addresses and pins the connection to that address), with no redirect followed.

WEBHOOK_ALLOW_PRIVATE=true lifts the address rule, for a receiver on the company's own
network (and the tests' receivers on loopback).
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

import requests
from django.conf import settings
from requests_hardened import Config, Manager
from requests_hardened.ip_filter import EXTRA_BLOCKED_NET_RANGES, InvalidIPAddress

TIMEOUT = (5, 10)  # connect, read: a slow receiver never holds a worker for long


class UnsafeDestination(Exception):
    """A URL the portal will not call. ``str()`` is fit for people; ``detail`` is for logs."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail or message


def _public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if not address.is_global or address.is_multicast:
        return False
    return not any(address in network for network in EXTRA_BLOCKED_NET_RANGES)


def check(url: str) -> None:
    """Raise UnsafeDestination unless every address ``url``'s host resolves to is public."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise UnsafeDestination("This is not a valid URL.", f"{url!r}: {exc}") from exc
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise UnsafeDestination("Only http:// and https:// URLs with a host name are allowed.")
    if settings.WEBHOOK_ALLOW_PRIVATE:
        return
    try:
        answers = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeDestination(
            f"The host {parts.hostname} does not resolve.", f"{parts.hostname}: {exc}"
        ) from exc
    addresses = {ipaddress.ip_address(answer[4][0].split("%")[0]) for answer in answers}
    refused = sorted(str(a) for a in addresses if not _public(a))
    if refused or not addresses:
        raise UnsafeDestination(
            "The portal only calls public internet addresses: this host resolves to a "
            "loopback, private, link-local or otherwise reserved address.",
            f"{parts.hostname} resolves to {', '.join(refused) or 'nothing'}",
        )


def post(url: str, **kwargs) -> requests.Response:
    """POST to ``url`` after :func:`check`, connecting only to the address checked, never
    following a redirect. Raises UnsafeDestination or a requests exception."""
    check(url)
    manager = Manager(
        Config(
            ip_filter_enable=not settings.WEBHOOK_ALLOW_PRIVATE,
            ip_filter_allow_loopback_ips=False,
            never_redirect=True,
            default_timeout=TIMEOUT,
        )
    )
    try:
        return manager.send_request("POST", url, allow_redirects=False, timeout=TIMEOUT, **kwargs)
    except InvalidIPAddress as exc:
        # requests-hardened's own check, at connection time: the name may resolve elsewhere
        # now than a moment ago (DNS rebinding).
        raise UnsafeDestination(
            "The portal only calls public internet addresses.",
            f"{urlsplit(url).hostname} resolved to {exc} when connecting",
        ) from exc
