"""The root routes: sign-in (sso), the admin, the JSON API, and the apps' pages."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from sso import views as sso_views
from sso.urls import oidc_urlpatterns

urlpatterns = [
    path("login/", sso_views.LoginView.as_view(), name="login"),
    path("oidc/", include(oidc_urlpatterns)),
    path("sso/", include("sso.urls")),
    path("", include("policies.urls")),
    path("", include("profiles.urls")),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("login/verify/", sso_views.second_factor, name="second_factor"),
    path("login/enrol/", sso_views.second_factor_enrol, name="second_factor_enrol"),
    path("admin/", admin.site.urls),
    path("api/", include("transfers.api.routes")),
    path("", include("transfers.urls")),
]

# An unknown URL under /api/ answers JSON, like every other API error.
handler404 = "transfers.api.errors.not_found"
