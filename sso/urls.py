from django.urls import path

from sso import views

urlpatterns = [
    path("oidc/authenticate/", views.StartView.as_view(), name="oidc_authentication_init"),
    path("oidc/callback/", views.CallbackView.as_view(), name="oidc_authentication_callback"),
    path("sso/groups/", views.mappings, name="sso_mappings"),
    path("sso/groups/<int:pk>/delete/", views.mapping_delete, name="sso_mapping_delete"),
]
