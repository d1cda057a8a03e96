from django.urls import path

from transfers.views import (
    accounts,
    approvals,
    audit,
    batches,
    inventory,
    notices,
    ops,
    overview,
    transfers,
)

urlpatterns = [
    path("", overview.home, name="home"),
    path("audit/", audit.audit_log, name="audit_log"),
    path("audit/export.csv", audit.audit_export, name="audit_export"),
    path("health/", ops.health, name="health"),
    path("metrics/", ops.metrics, name="metrics"),
    path("certificates/", inventory.certificate_list, name="certificate_list"),
    path("certificates/<int:pk>/", inventory.certificate_detail, name="certificate_detail"),
    path("certificates/<int:cert_pk>/transfer/", transfers.transfer_new, name="transfer_new"),
    path("accounts/", accounts.account_list, name="account_list"),
    path("accounts/new/", accounts.account_edit, name="account_new"),
    path("accounts/<int:pk>/", accounts.account_detail, name="account_detail"),
    path("accounts/<int:pk>/edit/", accounts.account_edit, name="account_edit"),
    path("accounts/<int:pk>/sync/", accounts.account_sync, name="account_sync"),
    path(
        "accounts/<int:pk>/webhook-secret/",
        accounts.account_webhook_secret,
        name="account_webhook_secret",
    ),
    path("transfers/", transfers.transfer_list, name="transfer_list"),
    path("batches/", batches.batch_list, name="batch_list"),
    path("batches/new/", batches.batch_new, name="batch_new"),
    path("batches/<int:pk>/", batches.batch_detail, name="batch_detail"),
    path("approvals/", approvals.approvals, name="approvals"),
    path("incoming/", transfers.incoming, name="incoming"),
    path("notices/", notices.notice_list, name="notice_list"),
    path("notices/<int:pk>/", notices.notice_detail, name="notice_detail"),
    path("transfers/<int:pk>/", transfers.transfer_detail, name="transfer_detail"),
    path(
        "transfers/<int:pk>/notices/<int:notice_pk>/resend/",
        transfers.notice_resend,
        name="notice_resend",
    ),
]
for action in ("approve", "decline", "withdraw", "retry", "cancel"):
    urlpatterns.append(
        path(
            f"batches/<int:pk>/{action}/",
            getattr(batches, f"batch_{action}"),
            name=f"batch_{action}",
        )
    )
for action in (
    "approve",
    "decline",
    "withdraw",
    "cancel",
    "retry",
    "accept",
    "reject",
    "reconcile",
    "restore_retry",
    "restored_by_hand",
    "approve_landing",
    "retry_landing",
    "landed_by_hand",
):
    urlpatterns.append(
        path(
            f"transfers/<int:pk>/{action}/",
            getattr(transfers, f"transfer_{action}"),
            name=f"transfer_{action}",
        )
    )
