import pytest
from django.core.exceptions import ImproperlyConfigured

from portal import env


def test_boolean_refuses_what_it_does_not_understand(monkeypatch):
    monkeypatch.setenv("X_FLAG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="X_FLAG='maybe' is not a boolean"):
        env.boolean("X_FLAG", False)


@pytest.mark.parametrize(
    ("raw", "expected"), [("true", True), ("0", False), ("OFF", False), ("", True)]
)
def test_boolean_reads_the_usual_spellings(monkeypatch, raw, expected):
    monkeypatch.setenv("X_FLAG", raw)
    assert env.boolean("X_FLAG", True) is expected


def test_integer_refuses_garbage_and_out_of_range(monkeypatch):
    monkeypatch.setenv("X_NUM", "ten")
    with pytest.raises(ImproperlyConfigured, match="not an integer"):
        env.integer("X_NUM", 1)
    monkeypatch.setenv("X_NUM", "-3")
    with pytest.raises(ImproperlyConfigured, match="at least 0"):
        env.integer("X_NUM", 1, minimum=0)


def test_secrets_can_come_from_a_file(monkeypatch, tmp_path):
    secret = tmp_path / "key"
    secret.write_text("s3cret\n")
    monkeypatch.setenv("X_SECRET_FILE", str(secret))
    assert env.string("X_SECRET") == "s3cret"


def test_an_unreadable_secret_file_is_an_error(monkeypatch, tmp_path):
    monkeypatch.setenv("X_SECRET_FILE", str(tmp_path / "missing"))
    with pytest.raises(ImproperlyConfigured, match="cannot be read"):
        env.string("X_SECRET")


def test_a_required_string_must_be_set(monkeypatch):
    monkeypatch.delenv("X_REQUIRED", raising=False)
    with pytest.raises(ImproperlyConfigured, match="X_REQUIRED must be set"):
        env.string("X_REQUIRED")
