"""Web requests and AWS: a page waits a few seconds at most for the shared AWS rate, and
any AWS or limiter condition that reaches the top answers a clear 503, never a 500."""

from __future__ import annotations

import logging

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from transfers import aws

log = logging.getLogger(__name__)


class AwsBusyMiddleware:
    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        with aws.waiting_at_most(settings.AWS_INTERACTIVE_WAIT_SECONDS):
            return self.get_response(request)

    def process_exception(self, request: HttpRequest, exc: Exception) -> HttpResponse | None:
        if not isinstance(exc, aws.AwsError):
            return None
        log.warning("AWS answered a web request with %s: %s", exc.code, exc)
        retry = aws.retry_after(exc)
        message = exc.user_message
        if exc.code == "RateLimited" or exc.retryable:
            message = f"AWS is busy for this account: try again in {retry} s."
        if request.path.startswith("/api/"):
            response: HttpResponse = JsonResponse(
                {"error": {"code": exc.code, "message": message}}, status=503
            )
        else:
            response = render(request, "transfers/aws_busy.html", {"message": message}, status=503)
        response["Retry-After"] = str(retry)
        return response
