from django.apps import AppConfig


class TransfersConfig(AppConfig):
    name = "transfers"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_in

        from transfers.security import mark_session_start

        user_logged_in.connect(mark_session_start, dispatch_uid="portal_session_start")
