"""The API's URLs, mounted at /api/ (portal/urls.py)."""

from django.urls import path
from drf_spectacular.views import SpectacularAPIView
from rest_framework.permissions import IsAuthenticated

from transfers.api import portal, views

app_name = "api"

urlpatterns = [
    path("certificates/", views.CertificateList.as_view(), name="certificate-list"),
    path("certificates/<int:pk>/", views.certificate_detail, name="certificate-detail"),
    path("certificates/<int:pk>/plan/", views.certificate_plan, name="certificate-plan"),
    path("transfers/", views.TransferList.as_view(), name="transfer-list"),
    path("transfers/<int:pk>/", views.transfer_detail, name="transfer-detail"),
    path("transfers/<int:pk>/approve/", views.approve, name="transfer-approve"),
    path("transfers/<int:pk>/decline/", views.decline, name="transfer-decline"),
    path("transfers/<int:pk>/withdraw/", views.withdraw, name="transfer-withdraw"),
    path("transfers/<int:pk>/cancel/", views.cancel, name="transfer-cancel"),
    path("transfers/<int:pk>/retry/", views.retry, name="transfer-retry"),
    path("transfers/<int:pk>/accept/", views.accept, name="transfer-accept"),
    path("transfers/<int:pk>/reject/", views.reject, name="transfer-reject"),
    path("transfers/<int:pk>/reconcile/", views.reconcile, name="transfer-reconcile"),
    path(
        "transfers/<int:pk>/approve-landing/",
        views.approve_landing,
        name="transfer-approve-landing",
    ),
    path("transfers/<int:pk>/retry-landing/", views.retry_landing, name="transfer-retry-landing"),
    path(
        "transfers/<int:pk>/landed-by-hand/",
        views.landed_by_hand,
        name="transfer-landed-by-hand",
    ),
    path("transfers/<int:pk>/retry-restore/", views.retry_restore, name="transfer-retry-restore"),
    path(
        "transfers/<int:pk>/restored-by-hand/",
        views.restored_by_hand,
        name="transfer-restored-by-hand",
    ),
    path(
        "transfers/<int:pk>/release-devices/",
        views.release_devices,
        name="transfer-release-devices",
    ),
    path("transfers/<int:pk>/stop-waiting/", views.stop_waiting, name="transfer-stop-waiting"),
    path("incoming/", views.IncomingList.as_view(), name="incoming"),
    path("batches/", views.BatchList.as_view(), name="batch-list"),
    path("batches/preflight/", views.batch_preflight, name="batch-preflight"),
    path("batches/<int:pk>/", views.batch_detail, name="batch-detail"),
    path("batches/<int:pk>/approve/", views.batch_approve, name="batch-approve"),
    path("batches/<int:pk>/decline/", views.batch_decline, name="batch-decline"),
    path("batches/<int:pk>/withdraw/", views.batch_withdraw, name="batch-withdraw"),
    path("batches/<int:pk>/cancel/", views.batch_cancel, name="batch-cancel"),
    path("batches/<int:pk>/retry/", views.batch_retry, name="batch-retry"),
    path(
        "batches/<int:pk>/approve-landing/",
        views.batch_approve_landing,
        name="batch-approve-landing",
    ),
    path("batches/<int:pk>/resume/", views.batch_resume, name="batch-resume"),
    path("batches/<int:pk>/stop/", views.batch_stop, name="batch-stop"),
    path("notices/", portal.NoticeList.as_view(), name="notice-list"),
    path("notices/<int:pk>/send-again/", portal.notice_send_again, name="notice-send-again"),
    path("accounts/", portal.AccountList.as_view(), name="account-list"),
    path("accounts/<int:pk>/", portal.account_detail, name="account-detail"),
    path("accounts/<int:pk>/sync/", portal.account_sync, name="account-sync"),
    path("audit/", portal.AuditList.as_view(), name="audit"),
    path("me/", portal.me, name="me"),
    # Behind a login like everything else (drf-spectacular serves it to anyone by default).
    path(
        "schema/",
        SpectacularAPIView.as_view(permission_classes=[IsAuthenticated]),
        name="schema",
    ),
]
