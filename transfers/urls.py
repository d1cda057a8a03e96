from django.urls import path

from transfers.views import accounts, inventory

urlpatterns = [
    path("", inventory.certificate_list, name="certificate_list"),
    path("certificates/<int:pk>/", inventory.certificate_detail, name="certificate_detail"),
    path("accounts/", accounts.account_list, name="account_list"),
    path("accounts/new/", accounts.account_edit, name="account_new"),
    path("accounts/<int:pk>/", accounts.account_detail, name="account_detail"),
    path("accounts/<int:pk>/edit/", accounts.account_edit, name="account_edit"),
    path("accounts/<int:pk>/sync/", accounts.account_sync, name="account_sync"),
]
