"""The approval policy page of an account."""

from django.urls import path

from policies import views

app_name = "policies"
urlpatterns = [
    path("accounts/<int:pk>/approval-policy/", views.edit, name="edit"),
]
