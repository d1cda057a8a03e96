"""``make test`` builds its databases from the models (--nomigrations): the migrations must
say the same, or the service tier and every deployment would run a different schema."""

import io

import pytest
from django.core.management import call_command


@pytest.mark.django_db
def test_the_migrations_describe_the_models_exactly(settings):
    settings.MIGRATION_MODULES = {}  # the project's own, which --nomigrations hides
    out = io.StringIO()
    try:
        call_command("makemigrations", "--check", "--dry-run", stdout=out, stderr=out)
    except SystemExit as exc:
        pytest.fail(f"models and migrations differ (exit {exc.code}):\n{out.getvalue()}")
    assert "No changes detected" in out.getvalue()
