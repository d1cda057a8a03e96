"""Fixtures shared by the suite: the AWS stand-in in process, accounts and personas."""

from __future__ import annotations

import contextlib
import gc
import itertools
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import Group, User
from django.core.cache import cache
from django.test import Client

from demo import certificate_pem
from portal.celery import app as celery_app
from transfers import aws
from transfers.api import tokens as api_tokens
from transfers.models import AccountGrant, AwsAccount, Role

SOURCE, TARGET, KNOWN, OTHER = "111111111111", "222222222222", "333333333333", "444444444444"


def _share_botocore_models() -> None:
    """Every boto3 session builds its own botocore loader, which parses the service and
    endpoint JSON files again (IoT's model is large): a quarter of test_workflow.py's time
    under cProfile, because aws.clear_cache() gives every test new sessions. The loaders
    made here share one memo of what they parsed; each keeps its own search paths."""
    import botocore.session

    shared: dict = {}
    original = botocore.session.create_loader

    def create_loader(search_path_string=None):
        loader = original(search_path_string)
        loader._cache = shared
        return loader

    botocore.session.create_loader = create_loader


def _share_client_classes() -> None:
    """botocore builds a client's class (a method per operation, from the service model)
    for every client it makes, and the suite makes new clients in every test
    (aws.clear_cache()): a fifth of the time of making one. The class depends only on the
    service's model, which every test shares (above): made once per service here."""
    import botocore.client

    classes: dict = {}
    original = botocore.client.ClientCreator._create_client_class

    def create_client_class(self, service_name, service_model):
        key = (service_name, service_model.api_version)
        if key not in classes:
            classes[key] = original(self, service_name, service_model)
        return classes[key]

    botocore.client.ClientCreator._create_client_class = create_client_class


def _one_boto3_session() -> None:
    """aws.clear_cache() in every test (the accounts and moto's state are new) also dropped
    the process's boto3 session, and a new one registers botocore's 600-odd built-in
    handlers again. The session holds no account's state (clients get the credentials
    passed in, and are still made per test): the suite keeps one per process."""
    import boto3

    shared: list[boto3.Session] = []

    def session() -> boto3.Session:
        if not shared:
            shared.append(boto3.Session())
        return shared[0]

    aws._session = session


def _one_sts_client() -> None:
    """The portal's own STS client carries no account's state either (the suite's fixed
    environment credentials), but aws.clear_cache() dropped it in every test and each test
    made a new one (a client is about 5 ms): the suite keeps one per endpoint and settings."""
    import os

    from django.conf import settings

    made: dict = {}
    original = aws._sts

    def sts():
        key = (
            settings.AWS_ENDPOINT_URL,
            settings.AWS_RETRY_MODE,
            settings.AWS_MAX_ATTEMPTS,
            settings.AWS_CONNECT_TIMEOUT,
            settings.AWS_READ_TIMEOUT,
            os.environ.get("AWS_ACCESS_KEY_ID"),
            os.environ.get("AWS_SECRET_ACCESS_KEY"),
        )
        if key not in made:
            aws._sts_client = None
            made[key] = original()
        return made[key]

    aws._sts = sts


_share_botocore_models()
_share_client_classes()
_one_boto3_session()
_one_sts_client()


def pytest_collection_finish(session):
    """The cyclic garbage collector scanned every object the imports and the collection made
    (Django, botocore's models, schemathesis) again and again, with the suite making many
    short-lived objects: those are frozen out of its scans, and it runs after 50,000 new
    objects instead of 700. About 13 % less CPU for the suite; memory is plentiful here."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


@pytest.fixture(scope="session")
def django_db_setup(request, django_db_setup, django_db_blocker):
    """Under --nomigrations (``make test``) the tables come from the models: record every
    migration as applied, as on a migrated database, so the tests of a migration can step
    back to the one before it and forward again (test_migrations.py keeps the models and
    the migrations saying the same)."""
    if request.config.getoption("nomigrations", False):
        from django.db import connection
        from django.db.migrations.loader import MigrationLoader
        from django.db.migrations.recorder import MigrationRecorder
        from django.test.utils import override_settings

        with django_db_blocker.unblock(), override_settings(MIGRATION_MODULES={}):
            recorder = MigrationRecorder(connection)
            recorder.ensure_schema()
            for app, name in MigrationLoader(connection).graph.nodes:
                recorder.record_applied(app, name)


@pytest.fixture(autouse=True)
def _eager_celery(request):
    """Tasks enqueued after commit run inline in unit tests; the service tier (marked
    ``services``) sends them to a real broker and worker process instead."""
    if request.node.get_closest_marker("services"):
        yield
        return
    saved = {
        k: celery_app.conf[k] for k in ("task_always_eager", "task_eager_propagates", "broker_url")
    }
    celery_app.conf.update(
        task_always_eager=True, task_eager_propagates=True, broker_url="memory://"
    )
    yield
    celery_app.conf.update(saved)


@pytest.fixture(autouse=True)
def later_polls(request, monkeypatch):
    """Polls (queue.send_later: look again at a device's job, at a device coming back) are
    collected here instead of run by the eager Celery at once and for ever; a test runs them
    when it chooses: ``for name, args in later_polls: ...``. The service tier sends them."""
    polls: list[tuple[str, tuple]] = []
    if not request.node.get_closest_marker("services"):
        from transfers import queue

        monkeypatch.setattr(
            queue, "send_later", lambda name, *args, seconds: polls.append((name, args))
        )
    return polls


@pytest.fixture(autouse=True)
def _fast_and_isolated(settings, monkeypatch):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.AWS_ENDPOINT_URL = None
    settings.AWS_MAX_ATTEMPTS = 1
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    aws.clear_cache()
    cache.clear()
    yield
    aws.clear_cache()


class VerifiedClient(Client):
    """``force_login`` skips the login form, and so the second factor too: an approver or
    admin logged in this way has passed it. Tests of the second factor itself use a plain
    ``django.test.Client``."""

    def force_login(self, user, backend=None):
        from django_otp import DEVICE_ID_SESSION_KEY

        from sso.middleware import needs_second_factor
        from transfers.models import AuthenticatorApp

        super().force_login(user, backend)
        if needs_second_factor(user):
            device = AuthenticatorApp.objects.filter(user=user, confirmed=True).first()
            device = device or AuthenticatorApp.objects.create(user=user, name="test")
            session = self.session
            session[DEVICE_ID_SESSION_KEY] = device.persistent_id
            session.save()


@pytest.fixture
def client() -> VerifiedClient:
    return VerifiedClient()


@pytest.fixture
def standin():
    """The AWS stand-in (moto plus the project's IoT extension) in process."""
    from moto import mock_aws

    import standin as standin_pkg
    from standin import control

    standin_pkg.install()
    control.reset_counters()
    control.clear_faults()
    with mock_aws():
        yield control
    control.clear_faults()


def make_account(account_id: str, name: str = "", managed: bool = True, **fields) -> AwsAccount:
    defaults = {
        "name": name or f"Account {account_id}",
        "managed": managed,
        "regions": ["us-east-1"] if managed else [],
        "role_arn": f"arn:aws:iam::{account_id}:role/TransferPortal" if managed else "",
        "contact_emails": f"ops@{account_id}.example",
        # Tests make calls in bursts; the rate limiter has tests of its own.
        "api_rate": 1000.0,
    }
    defaults.update(fields)
    return AwsAccount.objects.create(account_id=account_id, **defaults)


def make_user(username: str, *grants: tuple[AwsAccount, str]) -> User:
    user = User.objects.create_user(username, f"{username}@example.com", "pw")
    for account, role in grants:
        AccountGrant.objects.create(account=account, user=user, role=role)
    return user


@pytest.fixture
def source(db) -> AwsAccount:
    return make_account(SOURCE, "Fleet production", regions=["us-east-1", "eu-west-1"])


@pytest.fixture
def target(db) -> AwsAccount:
    return make_account(TARGET, "Acme devices")


@pytest.fixture
def other(db) -> AwsAccount:
    return make_account(OTHER, "Someone else's account")


@pytest.fixture
def requester(source) -> User:
    return make_user("requester", (source, Role.REQUESTER))


@pytest.fixture
def approver(source) -> User:
    return make_user("approver", (source, Role.APPROVER))


@pytest.fixture
def viewer(source) -> User:
    return make_user("viewer", (source, Role.VIEWER))


@pytest.fixture
def outsider(other) -> User:
    return make_user("outsider", (other, Role.ADMIN))


@pytest.fixture
def portal_admin(db) -> User:
    user = User.objects.create_user("padmin", "padmin@example.com", "pw")
    user.groups.add(Group.objects.get_or_create(name="admin")[0])
    return user


def api_token(user: User, *, days: int | None = None) -> str:
    """A new API token for ``user``, as automation sends it after ``Token ``. Every test
    makes its tokens here, so the scheme (transfers.api.tokens) lives in one place."""
    return api_tokens.issue(user, days=days)[1]


def iot_for(account: AwsAccount, region: str = "us-east-1"):
    return aws.client(account, region)


_serial = itertools.count(1)


def add_certificate(iot, status="ACTIVE", policies=(), thing=None, days_left=365) -> dict:
    """Register a fresh certificate (EC keys: fast) with policies and a thing."""
    now = datetime.now(UTC)
    pem = certificate_pem(
        f"test-{next(_serial)}", now - timedelta(days=30), now + timedelta(days=days_left)
    )
    made = iot.register_certificate_without_ca(certificatePem=pem, status=status)
    for policy in policies:
        with contextlib.suppress(iot.exceptions.ResourceAlreadyExistsException):
            iot.create_policy(
                policyName=policy, policyDocument='{"Version":"2012-10-17","Statement":[]}'
            )
        iot.attach_policy(policyName=policy, target=made["certificateArn"])
    if thing:
        iot.create_thing(thingName=thing)
        iot.attach_thing_principal(thingName=thing, principal=made["certificateArn"])
    return made


def committed(fn, *args, **kwargs):
    """Call ``fn`` and run what it enqueued after commit, as the worker would."""
    from django.test import TestCase

    with TestCase.captureOnCommitCallbacks(execute=True):
        return fn(*args, **kwargs)
