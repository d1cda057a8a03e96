"""Refusals and retries the workflow raises; the actors that are not people."""

from __future__ import annotations

from transfers import aws

WORKER = "worker"
RECONCILER = "reconciler"
EXPIRY = "expiry"


class TransferError(Exception):
    """A refusal with a stable code and a message for the person who asked."""

    def __init__(
        self, code: str, message: str, status: int = 400, retry_after: int | None = None
    ) -> None:
        self.code, self.message, self.status = code, message, status
        self.retry_after = retry_after  # seconds, for a 429/503 answer's Retry-After
        super().__init__(message)

    @classmethod
    def from_aws(cls, exc: aws.AwsError) -> TransferError:
        """AWS's refusal for the person who asked: busy or unavailable is 503 with a time
        to come back; anything else is AWS's own answer (502)."""
        if exc.retryable:
            return cls(exc.code, exc.user_message, 503, retry_after=aws.retry_after(exc))
        return cls(exc.code, exc.user_message, 502)


class RetryLater(Exception):
    """A throttled or unavailable AWS: the task should try again after a backoff."""

    def __init__(self, error: aws.AwsError) -> None:
        self.error = error
        super().__init__(str(error))
