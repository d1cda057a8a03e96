"""Single sign-on and the session policy; connects the login signal."""

from django.apps import AppConfig


class SsoConfig(AppConfig):
    name = "sso"
    verbose_name = "Single sign-on"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_in

        from sso.signals import mark_session_start

        user_logged_in.connect(mark_session_start, dispatch_uid="portal_session_start")
