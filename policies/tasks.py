"""Mail about approvals, sent by a worker after commit (policies.mail)."""

from __future__ import annotations

import smtplib

from celery import shared_task
from django.conf import settings
from django.core.mail import EmailMessage


@shared_task(name="policies.tasks.send_approval_mail", bind=True, max_retries=5, acks_late=True)
def send_approval_mail(self, subject: str, body: str, recipients: list[str]) -> int:
    message = EmailMessage(
        subject,
        body,
        settings.DEFAULT_FROM_EMAIL,
        recipients,
        headers={"X-Transfer-Approvals": "1"},  # not a transfer notice (X-Transfer-Notice)
    )
    try:
        return message.send()
    except (OSError, smtplib.SMTPException) as exc:
        raise self.retry(exc=exc, countdown=30 * 2**self.request.retries) from exc
