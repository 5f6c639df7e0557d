"""E-mail in (a maildir) and watched folders: files that arrive start workflow runs.

Both are declared on the app and watched by its workers::

    app.maildir_trigger("support-inbox", "/var/mail/support", workflow="triage",
                        map=lambda mail: {"subject": mail["subject"], "text": mail["text"]})
    app.folder_trigger("invoices", "/srv/drop/invoices", workflow="ingest_invoice")

- **The same event model** as webhooks and NATS (:mod:`aevos.events.intake`): each file is
  an :class:`~aevos.events.intake.Arrival` on channel ``email`` or ``folder``, recorded in
  ``aevos_events`` with its outcome; one that cannot be read or mapped is a dead letter,
  replayed like the others.
- **Idempotent starts, moved after the commit.** The run's idempotency key is
  ``email:<trigger>:<Message-ID>`` (the file's SHA-256 when the mail has no usable
  Message-ID) or ``folder:<trigger>:<SHA-256 of the file's name and content>``. A file is
  moved aside (maildir: from ``new/`` to ``cur/``; folder: to ``done/`` or ``failed/``) only
  after its run's start (or its dead letter) committed: a worker killed in between leaves
  the file where it was, and the next scan finds the key's run and starts nothing
  (DUPLICATE) before moving it. So a crash never loses a file and a rescan never starts a
  second run.
- **Partial writes.** A maildir's deliveries are atomic (written in ``tmp/``, renamed into
  ``new/``). In a folder, dotfiles and ``*.tmp``, ``*.part``, ``*.partial``, ``*~`` are
  ignored, and a file is taken only once its size and modification time were the same on
  two consecutive scans.
- **Bounds.** Only regular files directly in the watched directory are read (no symlinks,
  no subdirectories, opened with ``O_NOFOLLOW``), so nothing outside it can be reached; a
  file over ``max_bytes`` is recorded REJECTED and moved aside unread.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import (
    DefinitionError,
    EventMappingError,
    InvalidEventError,
    PayloadTooLargeError,
    UnknownSourceError,
    UnknownWorkflowError,
)
from ..identity import check_tenant
from ..kernel.workflow import StartOptions
from .intake import Arrival, Channel, Intake, dead_letterable, reason_of

if TYPE_CHECKING:
    from ..kernel.runtime import Runtime
    from ..kernel.workflow import Workflow
    from ..pii.datapolicy import DataPolicy
    from ..storage import UnitOfWork

log = logging.getLogger("aevos.events")

#: The default largest file read (bytes); a bigger one is rejected unread.
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
#: Ignored in a watched folder: still being written, by the usual conventions.
PARTIAL_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", "~")
DONE, FAILED = "done", "failed"

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_ID = re.compile(r"^[A-Za-z0-9_:@+=/.$!#%&*'?^`{|}~-]{1,128}$")


def _whole_event(event: Any) -> Mapping[str, Any]:
    return {"event": event}


@dataclass(frozen=True)
class FileTrigger:
    """A declared maildir (channel ``email``) or watched folder (channel ``folder``)
    trigger (see :meth:`aevos.Aevos.maildir_trigger`, :meth:`aevos.Aevos.folder_trigger`)."""

    name: str
    channel: Channel
    path: Path
    workflow: str
    tenant: str = "default"
    map: Callable[[Any], Any] = field(default=_whole_event, repr=False, compare=False)
    queue: str | None = None
    max_bytes: int = DEFAULT_MAX_BYTES
    interval: float = 1.0
    data_policy: DataPolicy | None = None

    def __post_init__(self) -> None:
        what = f"{self.kind} trigger {str(self.name)[:70]!r}"
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise DefinitionError(
                f"{what}: a name must be 1-64 characters of lowercase letters, digits, '_', '-'"
            )
        if self.channel not in (Channel.EMAIL, Channel.FOLDER):
            raise DefinitionError(f"{what}: channel must be email or folder")
        if not isinstance(self.path, Path) or not self.path.is_absolute():
            raise DefinitionError(f"{what}: path must be an absolute directory path")
        if not isinstance(self.workflow, str) or not self.workflow:
            raise DefinitionError(f"{what}: workflow= names the workflow each file starts")
        check_tenant(self.tenant)
        if not callable(self.map):
            raise DefinitionError(f"{what}: map must be callable")
        if isinstance(self.max_bytes, bool) or not isinstance(self.max_bytes, int):
            raise DefinitionError(f"{what}: max_bytes must be an integer")
        if not 0 < self.max_bytes <= 256 * 1024 * 1024:
            raise DefinitionError(f"{what}: max_bytes must be 1 byte to 256 MiB")
        if not 0.01 <= self.interval <= 3600:
            raise DefinitionError(f"{what}: interval must be 0.01 to 3600 seconds")

    @property
    def kind(self) -> str:
        return "maildir" if self.channel is Channel.EMAIL else "folder"

    @property
    def actor(self) -> str:
        return f"{self.channel.value}:{self.name}"


# -- reading what arrived ------------------------------------------------------------------


def mail_event_id(data: bytes) -> str:
    """A mail's id: its Message-ID (without the angle brackets) when it is a short printable
    one, the SHA-256 of a longer or stranger one, else the SHA-256 of the whole file."""
    try:
        headers = BytesParser(policy=policy.compat32).parsebytes(data, headersonly=True)
        raw = headers.get("Message-ID")
    except Exception:  # any file is read; one that is no mail has no Message-ID
        raw = None
    if isinstance(raw, str) and raw.strip():
        ident = raw.strip().strip("<>").strip()
        if _ID.match(ident):
            return ident
        return "sha256:" + hashlib.sha256(raw.strip().encode("utf-8", "replace")).hexdigest()
    return "sha256:" + hashlib.sha256(data).hexdigest()


def parse_mail(data: bytes) -> dict[str, Any]:
    """What a mapping sees of a mail: ``message_id``, ``from``, ``to``, ``cc``, ``subject``,
    ``date`` (ISO 8601 or None), ``text`` (the plain-text body, else the HTML one, else "")
    and ``attachments`` (``filename``, ``content_type``, ``size``; not their content)."""
    if not data.strip():
        raise InvalidEventError("the message is empty")
    try:
        message = BytesParser(policy=policy.default).parsebytes(data)
        assert isinstance(message, EmailMessage)
        sender = message.get("From")
        if sender is None or "@" not in str(sender):
            raise InvalidEventError("the message has no From header with an address")
        date = message.get("Date")
        when = None
        if date is not None:
            with contextlib.suppress(TypeError, ValueError):
                when = email.utils.parsedate_to_datetime(str(date)).isoformat()
        body = message.get_body(preferencelist=("plain", "html"))
        text = body.get_content() if body is not None else ""
        attachments = [
            {
                "filename": part.get_filename(),
                "content_type": part.get_content_type(),
                "size": len(part.get_payload(decode=True) or b""),
            }
            for part in message.iter_attachments()
        ]
        return {
            "message_id": message.get("Message-ID"),
            "from": str(sender),
            "to": [str(a) for a in message.get_all("To", [])],
            "cc": [str(a) for a in message.get_all("Cc", [])],
            "subject": str(message.get("Subject", "")),
            "date": when,
            "text": text if isinstance(text, str) else "",
            "attachments": attachments,
        }
    except InvalidEventError:
        raise
    except Exception as exc:
        # The type only: the parser's message may quote the mail.
        raise InvalidEventError(
            f"the message cannot be read as e-mail ({type(exc).__name__})"
        ) from None


def parse_file(name: str, data: bytes) -> dict[str, Any]:
    """What a mapping sees of a file: ``name``, ``size``, ``sha256`` and ``text`` (the
    content when it is UTF-8, else None)."""
    try:
        text: str | None = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    return {
        "name": name,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "text": text,
    }


def file_event_id(name: str, data: bytes) -> str:
    """A file's id: the SHA-256 of its name and content (the same file dropped again under
    the same name is the same event)."""
    return hashlib.sha256(name.encode("utf-8", "surrogateescape") + b"\0" + data).hexdigest()


# -- starting runs -------------------------------------------------------------------------


class FileTriggers:
    """Starts the runs of an app's maildir and folder triggers and replays their dead
    letters (the :class:`~aevos.events.intake.Replayer` of channels ``email`` and
    ``folder``)."""

    def __init__(self, runtime: Runtime, intake: Intake, triggers: Mapping[str, FileTrigger]):
        self.runtime = runtime
        self.intake = intake
        self.triggers = triggers

    def handle(self, trigger: FileTrigger, arrival: Arrival) -> str:
        """Start the run a file asks for; returns ACCEPTED, DUPLICATE or DEAD (dead-
        lettered). Raises :class:`~aevos.errors.StorageError` when nothing could be
        recorded: the file must then stay where it is."""
        try:
            status, _ = self._traced(trigger, arrival, trigger.actor)
        except Exception as exc:
            if not dead_letterable(exc):
                raise
            self.intake.dead_letter(arrival, exc, actor=trigger.actor)
            return "DEAD"
        return status

    def reject(self, trigger: FileTrigger, arrival: Arrival, exc: Exception) -> None:
        """Record a file refused unread (too large): REJECTED, no dead letter (nothing of
        it is kept to replay)."""
        _, reason = reason_of(exc)
        with self.runtime.store.transaction() as uow:
            self.intake.record(uow, arrival, "REJECTED", actor=trigger.actor, reason=reason)

    def replay(self, arrival: Arrival, actor: str) -> str:
        """Handle a dead letter of a trigger again, with its original event id."""
        trigger = self.triggers.get(arrival.source)
        if trigger is None or trigger.channel is not arrival.channel:
            raise UnknownSourceError(f"no {arrival.channel.value} trigger named {arrival.source!r}")
        _, run_id = self._traced(trigger, arrival, actor)
        return run_id

    def _traced(self, trigger: FileTrigger, arrival: Arrival, actor: str) -> tuple[str, str]:
        tracing = self.runtime.tracing
        if tracing is None:
            return self._start(trigger, arrival, actor)
        with tracing.incoming(
            None,
            f"aevos.{trigger.channel.value} receive",
            {"aevos.event.source": trigger.name, "aevos.event.channel": trigger.channel.value},
        ) as span:
            status, run_id = self._start(trigger, arrival, actor)
            span.set_attribute("aevos.event.status", status)
            span.set_attribute("aevos.run.id", run_id)
        return status, run_id

    def _start(self, trigger: FileTrigger, arrival: Arrival, actor: str) -> tuple[str, str]:
        if trigger.channel is Channel.EMAIL:
            event = parse_mail(arrival.payload)
        else:
            event = parse_file(str(arrival.meta.get("file", "")), arrival.payload)
        try:
            kwargs = trigger.map(event)
        except Exception as exc:
            # The type only: the message may quote the file.
            raise EventMappingError(
                f"the mapping of {trigger.kind} trigger {trigger.name!r} raised "
                f"{type(exc).__name__}"
            ) from None
        if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
            raise EventMappingError(
                f"the mapping of {trigger.kind} trigger {trigger.name!r} must return a dict of "
                f"keyword arguments, not {type(kwargs).__name__}"
            )
        opts = StartOptions(
            queue=trigger.queue,
            idempotency_key=f"{trigger.channel.value}:{trigger.name}:{arrival.event_id}",
            run_id=uuid.uuid4().hex,
            tenant=trigger.tenant,
            actor=actor,
            data_policy=trigger.data_policy,
        )
        runtime = self.runtime
        workflow: Workflow[Any, Any] | None = runtime.workflows.get(trigger.workflow)
        if workflow is None:
            error = UnknownWorkflowError(
                f"{trigger.kind} trigger {trigger.name!r} starts workflow "
                f"{trigger.workflow!r}, which is not registered"
            )
            runtime.reject(trigger.workflow, opts, error)
            raise error
        intake = self.intake

        def record(uow: UnitOfWork, run_id: str) -> None:
            # The run.started audit record names the key; one audit record per event.
            intake.record(uow, arrival, "ACCEPTED", actor=actor, run_id=run_id, audited=False)

        handle = runtime.enqueue(workflow, (), dict(kwargs), opts, also=record)
        if handle.run_id == opts.run_id:
            return "ACCEPTED", handle.run_id
        with runtime.store.transaction() as uow:
            intake.record(uow, arrival, "DUPLICATE", actor=actor, run_id=handle.run_id)
        return "DUPLICATE", handle.run_id


# -- watching ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Handled:
    """One file a scan handled: its name, the event's status (ACCEPTED, DUPLICATE, DEAD,
    REJECTED) and where the file went."""

    name: str
    status: str
    moved_to: str


def _read(path: Path, limit: int) -> bytes | None:
    """The file's bytes, or None when it is larger than ``limit``; never through a symlink."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(limit + 1)
    return None if len(data) > limit else data


def _subdir(root: Path, name: str) -> Path:
    target = root / name
    if target.is_symlink():
        raise DefinitionError(f"{target} is a symlink; aevos moves files only within {root}")
    target.mkdir(exist_ok=True)
    return target


def _free_name(directory: Path, name: str, digest: str) -> Path:
    target = directory / name
    if not target.exists():
        return target
    return directory / f"{name}.{digest[:12]}"


class FileWatcher:
    """Watches the app's maildir and folder triggers: what a worker starts and stops with
    itself (a companion, :meth:`aevos.Aevos.worker`), or :meth:`scan_once` from any
    process. Several workers may watch one directory: each file's run starts once (its
    key), and the losing worker's move finds the file gone."""

    def __init__(self, handler: FileTriggers, triggers: Sequence[FileTrigger]) -> None:
        self.handler = handler
        self.triggers = list(triggers)
        # A folder's candidates: (size, mtime_ns) seen at the previous scan, by trigger.
        self._sizes: dict[str, dict[str, tuple[int, int]]] = {t.name: {} for t in self.triggers}
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing: dict[str, str] = {}
        self.scans = 0

    def start(self) -> FileWatcher:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._main, name="aevos-files", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _main(self) -> None:
        due = dict.fromkeys((t.name for t in self.triggers), 0.0)
        while not self._stopping.is_set():
            now = time.monotonic()
            for trigger in self.triggers:
                if due[trigger.name] > now:
                    continue
                due[trigger.name] = now + trigger.interval
                try:
                    self.scan(trigger)
                except Exception as exc:
                    code = str(getattr(exc, "code", type(exc).__name__))
                    # Once per cause, not every interval: a missing directory stays missing.
                    if self._failing.get(trigger.name) != code:
                        log.warning(
                            "%s trigger %r: scan failed (%s); trying again every %.1f s",
                            trigger.kind,
                            trigger.name,
                            code,
                            trigger.interval,
                        )
                    self._failing[trigger.name] = code
                else:
                    if self._failing.pop(trigger.name, None) is not None:
                        log.info("%s trigger %r: scanning again", trigger.kind, trigger.name)
            self.scans += 1
            self._stopping.wait(max(0.01, min(due.values()) - time.monotonic()))

    def scan_once(self) -> list[Handled]:
        """Scan every trigger once; what was handled."""
        found: list[Handled] = []
        for trigger in self.triggers:
            found.extend(self.scan(trigger))
        return found

    def scan(self, trigger: FileTrigger) -> list[Handled]:
        if trigger.channel is Channel.EMAIL:
            return self._scan_maildir(trigger)
        return self._scan_folder(trigger)

    # -- maildir ----------------------------------------------------------------------------

    def _scan_maildir(self, trigger: FileTrigger) -> list[Handled]:
        root = trigger.path
        new, cur = root / "new", root / "cur"
        if not new.is_dir() or not cur.is_dir():
            raise DefinitionError(f"maildir trigger {trigger.name!r}: {root} is not a maildir")
        handled = []
        for entry in sorted(os.scandir(new), key=lambda e: e.name):
            if self._stopping.is_set():
                break
            if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
                continue
            done = self._mail(trigger, Path(entry.path), cur)
            if done is not None:
                handled.append(done)
        return handled

    def _mail(self, trigger: FileTrigger, path: Path, cur: Path) -> Handled | None:
        key = path.name.split(":", 1)[0]
        try:
            data = _read(path, trigger.max_bytes)
        except FileNotFoundError:
            return None  # another worker took it
        meta = {"key": key[:255]}
        if data is None:
            arrival = Arrival(
                Channel.EMAIL, trigger.name, trigger.tenant, "file:" + key[:120], b"", meta
            )
            self.handler.reject(
                trigger,
                arrival,
                PayloadTooLargeError(f"the message is over {trigger.max_bytes} bytes"),
            )
            status, flags = "REJECTED", "FS"
        else:
            arrival = Arrival(
                Channel.EMAIL, trigger.name, trigger.tenant, mail_event_id(data), data, meta
            )
            status = self.handler.handle(trigger, arrival)
            flags = "FS" if status == "DEAD" else "S"
        # Only now: the run's start (or the dead letter) has committed. Flagged: refused.
        target = cur / f"{key}:2,{flags}"
        return self._move(path, target, status)

    # -- folder -----------------------------------------------------------------------------

    def _scan_folder(self, trigger: FileTrigger) -> list[Handled]:
        root = trigger.path
        if not root.is_dir():
            raise DefinitionError(f"folder trigger {trigger.name!r}: {root} is not a directory")
        done, failed = _subdir(root, DONE), _subdir(root, FAILED)
        previous = self._sizes[trigger.name]
        seen: dict[str, tuple[int, int]] = {}
        ready: list[str] = []
        for entry in os.scandir(root):
            name = entry.name
            if name.startswith(".") or name.endswith(PARTIAL_SUFFIXES):
                continue
            if not entry.is_file(follow_symlinks=False):
                continue  # done/, failed/, other directories, symlinks
            stat = entry.stat(follow_symlinks=False)
            seen[name] = (stat.st_size, stat.st_mtime_ns)
            if previous.get(name) == seen[name]:
                ready.append(name)
        self._sizes[trigger.name] = seen
        handled = []
        for name in sorted(ready):
            if self._stopping.is_set():
                break
            result = self._file(trigger, root / name, done, failed)
            if result is not None:
                handled.append(result)
                seen.pop(name, None)
        return handled

    def _file(self, trigger: FileTrigger, path: Path, done: Path, failed: Path) -> Handled | None:
        name = path.name
        try:
            data = _read(path, trigger.max_bytes)
        except FileNotFoundError:
            return None
        meta = {"file": name[:255]}
        if data is None:
            ident = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()
            arrival = Arrival(
                Channel.FOLDER, trigger.name, trigger.tenant, "name:" + ident[:64], b"", meta
            )
            self.handler.reject(
                trigger,
                arrival,
                PayloadTooLargeError(f"the file is over {trigger.max_bytes} bytes"),
            )
            return self._move(path, _free_name(failed, name, ident), "REJECTED")
        arrival = Arrival(
            Channel.FOLDER, trigger.name, trigger.tenant, file_event_id(name, data), data, meta
        )
        status = self.handler.handle(trigger, arrival)
        # Only now: the run's start (or the dead letter) has committed.
        target_dir = failed if status == "DEAD" else done
        return self._move(path, _free_name(target_dir, name, arrival.event_id), status)

    def _move(self, path: Path, target: Path, status: str) -> Handled | None:
        try:
            os.rename(path, target)
        except FileNotFoundError:
            return None  # another worker moved it first
        return Handled(path.name, status, str(target))


__all__ = [
    "DEFAULT_MAX_BYTES",
    "FileTrigger",
    "FileTriggers",
    "FileWatcher",
    "Handled",
    "file_event_id",
    "mail_event_id",
    "parse_file",
    "parse_mail",
]
