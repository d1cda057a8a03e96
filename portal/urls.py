from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from sso.urls import oidc_urlpatterns
from sso.views import LoginView
from transfers.views import second_factor

urlpatterns = [
    path("login/", LoginView.as_view(), name="login"),
    path("oidc/", include(oidc_urlpatterns)),
    path("sso/", include("sso.urls")),
    path("", include("policies.urls")),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("login/verify/", second_factor.second_factor, name="second_factor"),
    path("login/enrol/", second_factor.second_factor_enrol, name="second_factor_enrol"),
    path("admin/", admin.site.urls),
    path("api/", include("transfers.api.routes")),
    path("", include("transfers.urls")),
]

# An unknown URL under /api/ answers JSON, like every other API error.
handler404 = "transfers.api.errors.not_found"
