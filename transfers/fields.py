"""Secrets at rest: a text field stored encrypted with Fernet (the cryptography package).

Keys come from FIELD_ENCRYPTION_KEYS (comma-separated Fernet keys): the first encrypts, every
one decrypts (MultiFernet), so a key is rotated by putting a new one first, running
``manage.py rotate_encryption_keys`` (re-encrypts every value with the first key), then
dropping the old one. Without the variable one machine keeps a generated key under
PORTAL_VAR_DIR (like SECRET_KEY); several machines must share the same keys (docs/deploy.md).
"""

from __future__ import annotations

from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models


@cache
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    try:
        return MultiFernet([Fernet(key.encode()) for key in keys])
    except ValueError as exc:
        raise ImproperlyConfigured(
            "FIELD_ENCRYPTION_KEYS: each key must be 32 url-safe base64-encoded bytes "
            "(python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key()"
            ".decode())')"
        ) from exc


def fernet() -> MultiFernet:
    return _fernet(tuple(settings.FIELD_ENCRYPTION_KEYS))


def encrypt(value: str) -> str:
    return fernet().encrypt(value.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise ImproperlyConfigured(
            "A value in the database cannot be decrypted with FIELD_ENCRYPTION_KEYS: a key it "
            "was encrypted with is missing from the list."
        ) from None


class EncryptedTextField(models.TextField):
    """A string encrypted in the database, plain in Python. Empty stays empty (so "has it a
    secret?" needs no key). Not searchable or sortable by its value."""

    def from_db_value(self, value, expression, connection):
        if not value:
            return value
        return decrypt(value)

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        if not value:
            return value
        return encrypt(value)
