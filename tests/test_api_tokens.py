"""API tokens are kept as digests (django-rest-knox): the database never holds one that works."""

from __future__ import annotations

import hashlib
import importlib
from datetime import UTC, datetime, timedelta
from io import StringIO
from types import SimpleNamespace

import pytest
import time_machine
from django.apps import apps
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.migrations.recorder import MigrationRecorder
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from tests.conftest import api_token, make_user
from transfers.models import ApiToken

migration = importlib.import_module("transfers.migrations.0013_secrets_at_rest")


def calls_with(token: str) -> int:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client.get(reverse("api:transfer-list")).status_code


def stored_rows() -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM knox_authtoken")
        return cursor.fetchall()


@pytest.fixture
def staff(db) -> User:
    return User.objects.create_superuser("root", "root@example.com", "pw")


def test_the_database_keeps_a_digest_never_the_token(requester):
    token = api_token(requester)
    assert calls_with(token) == 200
    [row] = stored_rows()
    assert not any(token in str(value) for value in row)
    stored = ApiToken.objects.get()
    assert stored.digest == hashlib.sha512(token.encode()).hexdigest()
    assert stored.token_key == token[:15] and len(token) == 64


def test_a_revoked_token_gets_401(requester):
    token = api_token(requester)
    ApiToken.objects.filter(user=requester).delete()
    assert calls_with(token) == 401


def test_an_expired_token_gets_401_and_stays_listed_as_expired(requester, staff, client):
    token = api_token(requester, days=1)
    assert calls_with(token) == 200
    with time_machine.travel(timezone.now() + timedelta(days=1, seconds=1)):
        assert calls_with(token) == 401
        client.force_login(staff)
        page = client.get(reverse("admin:transfers_apitoken_changelist")).content.decode()
        assert "expired" in page
    assert ApiToken.objects.filter(user=requester).exists()


def test_a_wrong_token_with_the_right_prefix_gets_401(requester):
    token = api_token(requester)
    forged = token[:15] + ("0" if token[15] != "0" else "1") + token[16:]
    assert calls_with(forged) == 401
    assert calls_with(token[:15]) == 401


def test_a_token_that_is_not_utf8_gets_401_not_500(requester):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token caf\xe9")
    assert client.get(reverse("api:transfer-list")).status_code == 401


def test_an_inactive_users_token_gets_401(requester):
    token = api_token(requester)
    requester.is_active = False
    requester.save()
    assert calls_with(token) == 401


def test_a_user_may_hold_several_tokens_revoked_one_by_one(requester):
    first, second = api_token(requester), api_token(requester)
    ApiToken.objects.get(token_key=first[:15]).delete()
    assert calls_with(first) == 401 and calls_with(second) == 200


# ---------------------------------------------------------------- DRF tokens migrated


def make_drf_table(*rows: tuple[str, int, str]) -> None:
    """DRF authtoken's table as it was (the app is no longer installed)."""
    with connection.cursor() as cursor:
        cursor.execute(
            'CREATE TABLE authtoken_token ("key" varchar(40) NOT NULL PRIMARY KEY, '
            '"created" datetime NOT NULL, "user_id" integer NOT NULL UNIQUE)'
        )
        for row in rows:
            cursor.execute("INSERT INTO authtoken_token VALUES (%s, %s, %s)", row)


def editor():
    def execute(sql):
        with connection.cursor() as cursor:
            cursor.execute(sql)

    return SimpleNamespace(connection=connection, execute=execute)  # what the function uses


def test_an_old_drf_token_still_authenticates_after_the_migration(requester, viewer):
    old_key = "0123456789abcdef0123456789abcdef01234567"  # DRF's format: 40 hex characters
    make_drf_table(
        (old_key, "2025-03-04 05:06:07.000008", requester.pk),
        ("f" * 40, "2025-01-01 00:00:00", viewer.pk),
    )
    MigrationRecorder(connection).record_applied("authtoken", "0004_alter_tokenproxy_options")
    migration.move_drf_tokens(apps, editor())

    assert "authtoken_token" not in connection.introspection.table_names()
    assert not MigrationRecorder(connection).migration_qs.filter(app="authtoken").exists()
    assert not any(old_key in str(value) for row in stored_rows() for value in row)
    moved = ApiToken.objects.get(user=requester)
    assert moved.expiry is None
    assert moved.created == datetime(2025, 3, 4, 5, 6, 7, 8, tzinfo=UTC)
    assert calls_with(old_key) == 200
    assert calls_with("f" * 40) == 200
    assert calls_with("0" * 40) == 401


def test_the_migration_does_nothing_without_drf_tokens(requester):
    migration.move_drf_tokens(apps, editor())
    assert not ApiToken.objects.exists()


# ---------------------------------------------------------------- issuing


def test_the_command_prints_a_token_that_works(requester):
    out, err = StringIO(), StringIO()
    call_command("create_api_token", "requester", stdout=out, stderr=err)
    token = out.getvalue().strip()
    assert calls_with(token) == 200
    assert "shown only now" in err.getvalue() and "until revoked" in err.getvalue()
    assert token not in err.getvalue()
    assert ApiToken.objects.get(user=requester).expiry is None


def test_the_command_sets_an_expiry(requester):
    out = StringIO()
    call_command("create_api_token", "requester", "--days", "30", stdout=out, stderr=StringIO())
    expiry = ApiToken.objects.get(user=requester).expiry
    assert timedelta(days=29) < expiry - timezone.now() <= timedelta(days=30)
    assert calls_with(out.getvalue().strip()) == 200


@pytest.mark.parametrize(
    "args, message",
    [
        (["nobody"], "No user 'nobody'"),
        (["requester", "--days", "0"], "between 1 and 3650"),
        (["sleeper"], "inactive"),
    ],
)
def test_the_command_refuses_and_issues_nothing(requester, args, message):
    User.objects.create_user("sleeper", is_active=False)
    with pytest.raises(CommandError, match=message):
        call_command("create_api_token", *args, stdout=StringIO(), stderr=StringIO())
    assert not ApiToken.objects.exists()


def test_staff_issue_a_token_in_the_admin_shown_once(requester, staff, client):
    client.force_login(staff)
    add = reverse("admin:transfers_apitoken_add")
    assert client.get(add).status_code == 200
    page = client.post(add, {"user": requester.pk, "days": "7"})
    assert page.status_code == 200
    assert "no-cache" in page["Cache-Control"]  # the admin's never_cache
    token = page.context["secret"]
    assert token in page.content.decode() and "shown only this once" in page.content.decode()
    assert calls_with(token) == 200
    stored = ApiToken.objects.get(user=requester)
    assert stored.expiry is not None and token not in str(stored.__dict__)

    # Listed, looked at and revoked without the token (or its digest) on any page.
    pages = [
        client.get(reverse("admin:transfers_apitoken_changelist")),
        client.get(reverse("admin:transfers_apitoken_change", args=[stored.pk])),
        client.get(reverse("admin:transfers_apitoken_delete", args=[stored.pk])),
    ]
    for response in pages:
        assert response.status_code == 200
        text = response.content.decode().replace(stored.pk, "")  # the digest is in links
        assert token not in text and token[:15] not in text
        assert stored.pk[:20] not in text
    assert f"{token[:8]}…" in pages[0].content.decode()
    client.post(reverse("admin:transfers_apitoken_delete", args=[stored.pk]), {"post": "yes"})
    assert calls_with(token) == 401


def test_a_token_cannot_be_changed_in_the_admin(requester, staff, client):
    token = api_token(requester)
    stored = ApiToken.objects.get()
    client.force_login(staff)
    client.post(
        reverse("admin:transfers_apitoken_change", args=[stored.pk]),
        {"user": make_user("someone").pk},
    )
    assert ApiToken.objects.get().user == requester and calls_with(token) == 200


def test_an_outsider_cannot_reach_the_token_admin(requester, client):
    client.force_login(requester)
    add = reverse("admin:transfers_apitoken_add")
    response = client.get(add)
    assert response.status_code == 302 and "/login/" in response["Location"]
    assert client.post(add, {"user": requester.pk}).status_code == 302
    assert not ApiToken.objects.exists()


def test_knoxs_own_admin_is_not_there(staff, client):
    client.force_login(staff)
    assert client.get("/admin/knox/authtoken/").status_code == 404
