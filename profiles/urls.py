"""The profile page."""

from django.urls import path

from profiles import views

urlpatterns = [
    path("profile/", views.profile, name="profile"),
]
