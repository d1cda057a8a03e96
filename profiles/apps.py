"""A person's preferences (their time zone); connects the login signal that reads it."""

from django.apps import AppConfig


class ProfilesConfig(AppConfig):
    name = "profiles"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from profiles import signals  # noqa: F401  (connects the login handler)
