"""The default broker's transport (portal/broker.py) through kombu, in one process.

The multi-process stress run (producers, workers, SIGKILL) is tests/services/
test_broker_stress.py; these pin each rule on its own and run in milliseconds.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest
from kombu import Connection

from portal import broker

QUEUE = "celery"


@pytest.fixture
def folders(tmp_path):
    # kombu keeps the filesystem transport's bindings in one object per process (one
    # broker folder per process in real use); each test has folders of its own.
    broker.Transport.global_state.clear()
    return {
        "data_folder_in": str(tmp_path / "queue"),
        "data_folder_out": str(tmp_path / "queue"),
        "control_folder": str(tmp_path / "control"),
        "work_folder": str(tmp_path / "work"),
        "polling_interval": 0.01,
    }


@pytest.fixture
def conn(folders):
    with Connection("filesystem://", transport=broker.Transport, transport_options=folders) as c:
        yield c


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                          capture_output=True, text=True)  # fmt: skip
    return int(proc.stdout)


@pytest.mark.skipif(bool(os.environ.get("REDIS_URL")), reason="REDIS_URL picks Redis")
def test_the_default_settings_send_filesystem_urls_to_this_transport(settings):
    from kombu.transport import TRANSPORT_ALIASES

    # portal/settings.py made the choice when it loaded, without REDIS_URL (make test).
    assert settings.CELERY_BROKER_URL == "filesystem://localhost//"
    assert TRANSPORT_ALIASES["filesystem"] == "portal.broker:Transport"
    assert settings.CELERY_BROKER_TRANSPORT_OPTIONS["work_folder"].endswith("broker/work")
    with Connection("filesystem://") as c:
        assert isinstance(c.transport, broker.Transport)


def test_a_message_is_delivered_once_and_its_claim_removed_on_ack(conn, tmp_path):
    queue = conn.SimpleQueue(QUEUE)
    queue.put({"n": 1})
    queue.put({"n": 2})
    first = queue.get(timeout=1)
    assert first.payload == {"n": 1}
    claimed = list((tmp_path / "work" / "claimed").glob("*/*"))
    assert len(claimed) == 1  # held by this consumer until acknowledged
    first.ack()
    assert not list((tmp_path / "work" / "claimed").glob("*/*"))
    assert queue.get(timeout=1).payload == {"n": 2}
    with pytest.raises(queue.Empty):
        queue.get(timeout=0.05)


def test_publish_writes_the_whole_message_before_it_appears_in_the_queue(
    conn, tmp_path, monkeypatch
):
    """A consumer can only see complete files: the file is renamed into the queue folder
    after it was written and closed (kombu's own transport created it there empty)."""
    seen = []
    rename = os.rename

    def checking_rename(src, dst):
        with open(src, "rb") as f:
            content = f.read()
        rename(src, dst)  # (the first publish to a queue makes its folder and tries again)
        if str(dst).endswith(broker.SUFFIX):
            seen.append(json.loads(content)["body"])

    monkeypatch.setattr(broker.os, "rename", checking_rename)
    conn.SimpleQueue(QUEUE).put({"n": 1})
    assert len(seen) == 1  # the message reached the queue through one rename, complete
    assert not list((tmp_path / "work" / "tmp").iterdir())


def test_an_empty_or_broken_file_is_set_aside_and_logged_and_the_next_message_delivered(
    conn, tmp_path, caplog
):
    queue = conn.SimpleQueue(QUEUE)
    folder = tmp_path / "queue" / QUEUE
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{0:020d}-empty.msg").write_bytes(b"")
    (folder / f"{1:020d}-broken.msg").write_bytes(b'{"properties": ')
    (folder / f"{2:020d}-notkombu.msg").write_bytes(b'{"hello": "world"}')
    queue.put({"n": "good"})

    with caplog.at_level(logging.ERROR, logger="portal.broker"):
        assert queue.get(timeout=1).payload == {"n": "good"}

    aside = sorted(p.name for p in (tmp_path / "work" / "bad").iterdir())
    assert [name.split(".")[0] for name in aside] == [
        f"{0:020d}-empty",
        f"{1:020d}-broken",
        f"{2:020d}-notkombu",
    ]
    assert sum("not a message" in r.getMessage() for r in caplog.records) == 3
    assert not list(folder.iterdir())


def test_messages_claimed_by_a_dead_consumer_go_back_to_their_queue(folders, tmp_path, caplog):
    with Connection("filesystem://", transport=broker.Transport, transport_options=folders) as c:
        c.SimpleQueue(QUEUE).put({"n": 1})
    # What a consumer killed with SIGKILL leaves behind: its claimed folder, named by its pid.
    queue_folder = tmp_path / "queue" / QUEUE
    (name,) = os.listdir(queue_folder)
    dead = tmp_path / "work" / "claimed" / f"{_dead_pid()}-abc"
    dead.mkdir(parents=True)
    os.rename(queue_folder / name, dead / f"{name}.{QUEUE}")

    with (
        Connection("filesystem://", transport=broker.Transport, transport_options=folders) as c,
        caplog.at_level(logging.WARNING, logger="portal.broker"),
    ):
        assert c.SimpleQueue(QUEUE).get(timeout=1).payload == {"n": 1}
    assert not dead.exists()
    assert any("stopped consumer" in r.getMessage() for r in caplog.records)


def test_claims_of_a_live_consumer_are_left_alone(folders, tmp_path):
    live = tmp_path / "work" / "claimed" / f"{os.getppid()}-abc"
    live.mkdir(parents=True)
    (live / f"{0:020d}-x.msg.{QUEUE}").write_bytes(b"{}")
    with Connection("filesystem://", transport=broker.Transport, transport_options=folders) as c:
        channel = c.default_channel
        assert channel.restore_from_dead_consumers() == 0
    assert (live / f"{0:020d}-x.msg.{QUEUE}").exists()


def test_a_rejected_message_is_requeued_once_and_an_unacked_one_restored_on_close(
    folders, tmp_path
):
    with Connection("filesystem://", transport=broker.Transport, transport_options=folders) as c:
        queue = c.SimpleQueue(QUEUE)
        queue.put({"n": 1})
        queue.get(timeout=1).requeue()
        again = queue.get(timeout=1)
        assert again.payload == {"n": 1}
    # closed without ack: restored to the queue, no claim left
    assert not list((tmp_path / "work" / "claimed").glob("*/*"))
    assert len(os.listdir(tmp_path / "queue" / QUEUE)) == 1


def test_queue_names_cannot_leave_the_queue_folder(conn):
    from kombu.exceptions import ChannelError

    with pytest.raises(ChannelError):
        conn.default_channel._put("../escape", {"properties": {"delivery_tag": "x"}})


def test_an_exchange_table_is_created_complete_by_concurrent_binders(folders, tmp_path):
    """kombu's transport created a missing table with open('wb') before locking it: a second
    binder could truncate the first's table."""
    with Connection("filesystem://", transport=broker.Transport, transport_options=folders) as c:
        channel = c.default_channel
        channel._queue_bind("celery.pidbox", "", "", "worker1.celery.pidbox")
        channel._queue_bind("celery.pidbox", "", "", "worker2.celery.pidbox")
        table = channel.get_table("celery.pidbox")
    assert {q.queue for q in table} == {"worker1.celery.pidbox", "worker2.celery.pidbox"}


def test_a_torn_exchange_table_is_set_aside_instead_of_failing_every_publish(
    folders, tmp_path, caplog
):
    control = tmp_path / "control"
    control.mkdir()
    (control / "celery.exchange").write_bytes(b"")
    with (
        Connection("filesystem://", transport=broker.Transport, transport_options=folders) as c,
        caplog.at_level(logging.ERROR, logger="portal.broker"),
    ):
        assert c.default_channel.get_table("celery") == []
    assert not (control / "celery.exchange").exists()
    assert any("unreadable exchange table" in r.getMessage() for r in caplog.records)
