"""The default broker for one machine: kombu's filesystem transport, made safe for several
producers and consumers.

kombu's own filesystem transport (5.7) can kill a worker: ``_put`` creates each message file
under its final name and only then writes it, while ``_get`` takes any file it finds, so a
consumer can read an empty file (``JSONDecodeError``, "Unrecoverable error", kombu issue
#1551). It also creates a missing exchange file by truncating it before locking it, and moves a
taken file to the system's temporary folder, which is a copy (not a rename) when that is
another filesystem. This transport keeps kombu's channel (routing, exchange files, QoS) and
changes how a message travels:

* publish: the message is written to ``work/tmp`` and renamed into ``<queue folder>/<queue>/``,
  so a consumer only ever sees complete files;
* take: a consumer renames the file into its own ``work/claimed/<pid>-<id>/`` folder (one
  rename wins, so a message goes to one consumer) and deletes it when the message is
  acknowledged, rejected or restored;
* a file that is not a message (empty, not JSON, not kombu's envelope) is logged and moved to
  ``work/bad/``; the consumer goes on with the next one;
* a consumer that died without acknowledging (SIGKILL, out of memory) leaves its claimed
  folder behind: any consumer that finds the owner process gone puts those messages back in
  their queues (at least once, as with Redis's visibility timeout, but within seconds).

Every folder must be on one filesystem (renames are atomic only there): checked at start.
Production uses Redis (``REDIS_URL``); this is for ``make run`` and single-machine installs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from pathlib import Path
from queue import Empty

from kombu import transport as kombu_transport
from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads
from kombu.utils.objects import cached_property

logger = logging.getLogger(__name__)

SUFFIX = ".msg"
SWEEP_SECONDS = 5.0  # how often a consumer looks for messages of dead consumers


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


class Channel(filesystem.Channel):
    """A filesystem channel whose messages appear atomically and are claimed by rename."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._backlog: dict[str, list[str]] = {}  # queue -> names left from the last listing
        self._claims: dict[str, Path] = {}  # delivery tag -> claimed file
        self._claim_dir: Path | None = None
        self._last_sweep = 0.0
        for folder in (self.tmp_folder, self.claimed_root, self.bad_folder):
            folder.mkdir(parents=True, exist_ok=True)
        for folder in (self.data_folder_in, self.data_folder_out, self.control_folder):
            Path(folder).mkdir(parents=True, exist_ok=True)
        devices = {
            os.stat(folder).st_dev
            for folder in (self.data_folder_in, self.data_folder_out, self.work_folder)
        }
        if len(devices) != 1:
            raise ChannelError(
                "the broker's queue and work folders must be on one filesystem "
                f"({self.data_folder_in}, {self.data_folder_out}, {self.work_folder})"
            )

    # ------------------------------------------------------------------ folders

    @cached_property
    def work_folder(self) -> Path:
        default = Path(self.data_folder_in).parent / "work"
        return Path(self.transport_options.get("work_folder", default))

    @cached_property
    def tmp_folder(self) -> Path:
        return self.work_folder / "tmp"

    @cached_property
    def claimed_root(self) -> Path:
        return self.work_folder / "claimed"

    @cached_property
    def bad_folder(self) -> Path:
        return self.work_folder / "bad"

    @cached_property
    def sweep_seconds(self) -> float:
        return float(self.transport_options.get("sweep_seconds", SWEEP_SECONDS))

    @staticmethod
    def _queue_folder(root: str | Path, queue: str) -> Path:
        # Queue names become folder names: refuse anything that could leave the root.
        if not queue or "/" in queue or "\\" in queue or "\0" in queue or not queue.strip("."):
            raise ChannelError(f"Invalid queue name: {queue!r}")
        return Path(root) / queue

    def _own_claim_dir(self) -> Path:
        if self._claim_dir is None or not self._claim_dir.name.startswith(f"{os.getpid()}-"):
            # (after a fork the child gets a folder of its own)
            self._claim_dir = self.claimed_root / f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
            self._claim_dir.mkdir(parents=True, exist_ok=True)
        return self._claim_dir

    # ------------------------------------------------------------------ exchange files

    def _queue_bind(self, exchange, routing_key, pattern, queue):
        # kombu creates a missing exchange file with open("wb") before locking it, so two
        # processes binding at once can truncate each other's table and a reader can see it
        # empty. Create it complete and atomically; kombu then only ever updates it in place
        # under its lock.
        file = self._exchange_file(exchange)
        if not file.exists():
            self.control_folder.mkdir(parents=True, exist_ok=True)
            tmp = self.tmp_folder / f"{uuid.uuid4().hex}.exchange"
            tmp.write_bytes(str_to_bytes(dumps([])))
            try:
                os.link(tmp, file)
            except FileExistsError:
                pass  # another process made it first: fine, it is complete too
            finally:
                tmp.unlink(missing_ok=True)
        super()._queue_bind(exchange, routing_key, pattern, queue)

    def get_table(self, exchange):
        try:
            return super().get_table(exchange)
        except ValueError:
            # A table torn by kombu's own transport before this one: set it aside (the
            # processes re-declare their bindings when they start) rather than fail every
            # publish.
            file = self._exchange_file(exchange)
            aside = self.bad_folder / f"{file.name}.{time.time_ns()}"
            with contextlib.suppress(OSError):
                os.replace(file, aside)
            logger.error("broker: unreadable exchange table %s moved to %s", file, aside)
            return []

    # ------------------------------------------------------------------ messages

    def _put(self, queue, payload, **kwargs):
        folder = self._queue_folder(self.data_folder_out, queue)
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex}{SUFFIX}"
        tmp = self.tmp_folder / name
        try:
            with open(tmp, "xb") as f:
                f.write(str_to_bytes(dumps(payload)))
            try:
                os.rename(tmp, folder / name)
            except FileNotFoundError:
                folder.mkdir(parents=True, exist_ok=True)
                os.rename(tmp, folder / name)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise ChannelError(f"Cannot add a message to {folder}: {exc}") from exc

    def _listing(self, queue: str) -> list[str]:
        folder = self._queue_folder(self.data_folder_in, queue)
        try:
            names = [n for n in os.listdir(folder) if n.endswith(SUFFIX)]
        except FileNotFoundError:
            return []
        names.sort(reverse=True)  # oldest last: list.pop() takes it
        return names

    def _get(self, queue):
        now = time.monotonic()
        if now - self._last_sweep >= self.sweep_seconds:
            self._last_sweep = now
            self.restore_from_dead_consumers()
        backlog = self._backlog.get(queue)
        if not backlog:
            backlog = self._backlog[queue] = self._listing(queue)
        folder = self._queue_folder(self.data_folder_in, queue)
        while backlog:
            name = backlog.pop()
            claimed = self._own_claim_dir() / f"{name}.{queue}"
            try:
                os.rename(folder / name, claimed)
            except FileNotFoundError:
                continue  # another consumer took it
            payload = self._read(claimed)
            if payload is None:
                continue
            self._claims[payload["properties"]["delivery_tag"]] = claimed
            return payload
        raise Empty()

    def _read(self, claimed: Path) -> dict | None:
        """The message in a claimed file, or None after setting a bad file aside."""
        try:
            payload = loads(bytes_to_str(claimed.read_bytes()))
            if not isinstance(payload, dict) or not isinstance(
                payload["properties"]["delivery_tag"], str
            ):
                raise ValueError("not a kombu message")
            return payload
        except (OSError, ValueError, TypeError, KeyError) as exc:
            aside = self.bad_folder / claimed.name
            try:
                os.replace(claimed, aside)
            except OSError:
                aside = claimed
            logger.error(
                "broker: set aside %s, which is not a message (%s: %s)",
                aside,
                type(exc).__name__,
                exc,
            )
            return None

    def _forget(self, delivery_tag) -> None:
        claimed = self._claims.pop(delivery_tag, None)
        if claimed is not None:
            with contextlib.suppress(FileNotFoundError):
                claimed.unlink()

    def basic_ack(self, delivery_tag, multiple=False):
        super().basic_ack(delivery_tag, multiple=multiple)
        self._forget(delivery_tag)
        self.connection.slot_freed.set()

    def basic_reject(self, delivery_tag, requeue=False):
        super().basic_reject(delivery_tag, requeue=requeue)  # requeue: _restore puts it back
        self._forget(delivery_tag)
        self.connection.slot_freed.set()

    def _restore(self, message):
        super()._restore(message)
        self._forget(message.delivery_tag)

    def close(self):
        super().close()  # restores what was not acknowledged
        if self._claim_dir is not None and self._claim_dir.name.startswith(f"{os.getpid()}-"):
            self._return_claims(self._claim_dir)

    # ------------------------------------------------------------------ dead consumers

    def _return_claims(self, claim_dir: Path) -> int:
        """Put the messages of a claimed folder back in their queues; remove the folder."""
        returned = 0
        try:
            names = os.listdir(claim_dir)
        except FileNotFoundError:
            return 0
        for claimed_name in names:
            # "<stem>.msg.<queue>": the stem has no dot, a queue name may have several.
            stem, _, rest = claimed_name.partition(".")
            if not rest.startswith(SUFFIX[1:] + "."):
                continue
            name, queue = stem + SUFFIX, rest[len(SUFFIX) :]
            try:
                folder = self._queue_folder(self.data_folder_out, queue)
                folder.mkdir(parents=True, exist_ok=True)
                os.rename(claim_dir / claimed_name, folder / name)
                returned += 1
            except FileNotFoundError:
                continue  # another consumer returned it first
            except (OSError, ChannelError) as exc:
                logger.error("broker: cannot return %s: %s", claim_dir / claimed_name, exc)
        with contextlib.suppress(OSError):
            claim_dir.rmdir()
        return returned

    def restore_from_dead_consumers(self) -> int:
        """Messages taken by consumers that are gone go back to their queues."""
        returned = 0
        try:
            entries = os.listdir(self.claimed_root)
        except FileNotFoundError:
            return 0
        for entry in entries:
            pid_text, _, _ = entry.partition("-")
            if not pid_text.isdigit() or _pid_alive(int(pid_text)):
                continue
            count = self._return_claims(self.claimed_root / entry)
            if count:
                logger.warning(
                    "broker: %d unacknowledged message(s) of stopped consumer %s put back",
                    count,
                    pid_text,
                )
            returned += count
        return returned

    # ------------------------------------------------------------------ management

    def _size(self, queue):
        return len(self._listing(queue))

    def _purge(self, queue):
        folder = self._queue_folder(self.data_folder_in, queue)
        count = 0
        for name in self._listing(queue):
            with contextlib.suppress(FileNotFoundError):
                (folder / name).unlink()
                count += 1
        self._backlog.pop(queue, None)
        return count


class Transport(filesystem.Transport):
    Channel = Channel
    driver_name = "filesystem-atomic"

    def __init__(self, client, **kwargs) -> None:
        super().__init__(client, **kwargs)
        self.slot_freed = threading.Event()

    def drain_events(self, connection, timeout=None):
        """kombu's loop, except that the wait between polls ends early when a message is
        acknowledged. A worker whose prefetch is full finds nothing to take; kombu would
        then sleep a whole polling interval although its pool (another thread) frees a slot
        a few milliseconds later, which held a prefork worker to about prefetch / interval
        messages a second."""
        started = time.monotonic()
        interval = self.polling_interval
        if timeout and interval and interval > timeout:
            interval = timeout
        while True:
            try:
                self.cycle.get(self._deliver, timeout=timeout)
            except Empty:
                if timeout is not None and time.monotonic() - started >= timeout:
                    raise TimeoutError() from None
                if interval is not None:
                    self.slot_freed.wait(interval)
                    self.slot_freed.clear()
            else:
                return


def use_for_filesystem_urls() -> None:
    """Make ``filesystem://`` URLs in this process use this transport (same options as
    kombu's, so the health check and the settings keep reading them as before)."""
    kombu_transport.TRANSPORT_ALIASES["filesystem"] = f"{__name__}:Transport"
    kombu_transport._transport_cache.pop("filesystem", None)  # noqa: SLF001 - kombu's cache
