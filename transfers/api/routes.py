"""The API's URLs, mounted at /api/ (portal/urls.py)."""

from django.urls import path
from drf_spectacular.views import SpectacularAPIView
from rest_framework.permissions import IsAuthenticated

from transfers.api import views

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
    path("incoming/", views.IncomingList.as_view(), name="incoming"),
    # Behind a login like everything else (drf-spectacular serves it to anyone by default).
    path(
        "schema/",
        SpectacularAPIView.as_view(permission_classes=[IsAuthenticated]),
        name="schema",
    ),
]
