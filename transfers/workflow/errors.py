"""Refusals and retries the workflow raises; the actors that are not people."""

from __future__ import annotations

from transfers import aws

WORKER = "worker"
RECONCILER = "reconciler"
EXPIRY = "expiry"


class TransferError(Exception):
    """A refusal with a stable code and a message for the person who asked."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        self.code, self.message, self.status = code, message, status
        super().__init__(message)


class RetryLater(Exception):
    """A throttled or unavailable AWS: the task should try again after a backoff."""

    def __init__(self, error: aws.AwsError) -> None:
        self.error = error
        super().__init__(str(error))
