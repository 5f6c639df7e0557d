"""E-mail in (a maildir) and watched folders, on SQLite and PostgreSQL: each file starts one
run, is moved aside only after that committed (a worker killed in between starts nothing
twice), partial writes and what is not a regular file of the folder are left alone, and
what cannot be read or mapped is dead-lettered and replayed after a fix."""

from __future__ import annotations

import mailbox
import os
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from aevos import Aevos
from aevos.errors import DefinitionError
from aevos.events.intake import Channel
from aevos.storage.schema import events, runs

REPO = Path(__file__).resolve().parents[1]


def _mail(subject: str, *, message_id: str | None, sender: str = "ann@example.com") -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "support@example.com"
    msg["Subject"] = subject
    if message_id is not None:
        msg["Message-ID"] = message_id
    msg.set_content(f"Hello, about {subject}.\n")
    return bytes(msg)


def _runs(app: Aevos, prefix: str) -> list[Any]:
    with app.store._tx() as conn:
        return list(
            conn.execute(
                sa.select(runs.c.run_id, runs.c.idempotency_key, runs.c.status).where(
                    runs.c.idempotency_key.like(f"{prefix}%")
                )
            ).all()
        )


def _statuses(app: Aevos, channel: str) -> list[str]:
    with app.store._tx() as conn:
        return sorted(
            conn.execute(sa.select(events.c.status).where(events.c.channel == channel)).scalars()
        )


def _inbox(app: Aevos, path: Path, **options: Any) -> mailbox.Maildir:
    box = mailbox.Maildir(path, create=True)

    @app.workflow(name="triage")
    def triage(ctx: Any, subject: str, sender: str) -> str:
        return f"{sender}: {subject}"

    app.maildir_trigger(
        "support-inbox",
        path,
        workflow="triage",
        map=options.pop("map", lambda m: {"subject": m["subject"], "sender": m["from"]}),
        **options,
    )
    return box


def test_each_mail_starts_one_run_and_moves_to_cur(app: Aevos, tmp_path: Path) -> None:
    box = _inbox(app, tmp_path / "inbox")
    box.add(_mail("printer", message_id="<a-1@example.com>"))
    box.add(_mail("printer again", message_id="<a-1@example.com>"))  # the same Message-ID
    box.add(_mail("no id", message_id=None))
    handled = app.file_watcher().scan_once()
    assert sorted(h.status for h in handled) == ["ACCEPTED", "ACCEPTED", "DUPLICATE"]
    keys = sorted(r.idempotency_key for r in _runs(app, "email:"))
    assert keys[0] == "email:support-inbox:a-1@example.com"
    assert keys[1].startswith("email:support-inbox:sha256:") and len(keys) == 2
    assert os.listdir(tmp_path / "inbox" / "new") == []
    assert all(name.endswith(":2,S") for name in os.listdir(tmp_path / "inbox" / "cur"))
    # Python's own Maildir reads them as seen messages.
    assert sorted(box[k].get_flags() for k in box.iterkeys()) == ["S", "S", "S"]
    assert app.file_watcher().scan_once() == []  # a rescan finds nothing new
    assert _statuses(app, "email") == ["ACCEPTED", "ACCEPTED", "DUPLICATE"]


def test_the_worker_watches_the_inbox_and_runs_what_arrives(app: Aevos, tmp_path: Path) -> None:
    box = _inbox(app, tmp_path / "inbox", interval=0.05)
    worker = app.worker(concurrency=2).start()
    try:
        box.add(_mail("vpn", message_id="<w-1@example.com>"))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = _runs(app, "email:support-inbox:w-1")
            if found and found[0].status == "SUCCEEDED":
                break
            time.sleep(0.05)
    finally:
        worker.stop()
    (run,) = _runs(app, "email:support-inbox:w-1")
    assert app.get_run(run.run_id).status.value == "SUCCEEDED"
    # The recorded output went through the default data policy: addresses redacted.
    assert app.get_run(run.run_id).output == "<EMAIL>: vpn"
    assert os.listdir(tmp_path / "inbox" / "new") == []


def test_malformed_mail_is_dead_lettered_and_replayed_after_a_fix(
    app: Aevos, tmp_path: Path
) -> None:
    # The mapping expects a ticket number in the subject.
    box = _inbox(
        app,
        tmp_path / "inbox",
        map=lambda m: {"subject": m["subject"].split("#", 1)[1], "sender": m["from"]},
    )
    box.add(b"this line is no header and there is no sender\n")
    box.add(_mail("no ticket number", message_id="<m-2@example.com>"))
    box.add(_mail("ticket #7", message_id="<m-3@example.com>"))
    handled = app.file_watcher().scan_once()
    assert sorted(h.status for h in handled) == ["ACCEPTED", "DEAD", "DEAD"]
    # Dead-lettered mails are moved too, flagged.
    flags = sorted(name.rsplit(",", 1)[1] for name in os.listdir(tmp_path / "inbox" / "cur"))
    assert flags == ["FS", "FS", "S"]
    letters = sorted(app.intake.list("default"), key=lambda letter: letter.id)
    assert [letter.code for letter in letters] == ["invalid_event", "event_mapping_failed"]
    assert all(letter.channel is Channel.EMAIL for letter in letters)
    assert "raised IndexError" in letters[1].reason and "ticket" not in letters[1].reason
    assert letters[1].event_id == "m-2@example.com" and "key" in letters[1].meta

    outcome = app.intake.replay("default", [letters[1].id], actor="test")
    assert not outcome[0].replayed and outcome[0].code == "event_mapping_failed"
    trigger = app.file_triggers["support-inbox"]
    app.file_triggers["support-inbox"] = replace(
        trigger, map=lambda m: {"subject": m["subject"].rpartition("#")[2], "sender": m["from"]}
    )
    first = app.intake.replay("default", [letters[0].id, letters[1].id], actor="test")
    assert [o.replayed for o in first] == [False, True]
    assert first[0].code == "invalid_event"
    again = app.intake.replay("default", [letters[1].id], actor="test")
    assert again[0].run_id == first[1].run_id
    keys = sorted(r.idempotency_key for r in _runs(app, "email:"))
    assert keys == ["email:support-inbox:m-2@example.com", "email:support-inbox:m-3@example.com"]


_KILLED_AFTER_COMMIT = textwrap.dedent(
    """
    import os, signal, sys
    from aevos import Aevos
    from aevos.events import files

    app = Aevos(sys.argv[1])

    @app.workflow(name="triage")
    def triage(ctx, subject, sender):
        return subject

    app.maildir_trigger("support-inbox", sys.argv[2], workflow="triage",
                        map=lambda m: {"subject": m["subject"], "sender": m["from"]})

    def die(self, path, target, status):
        # The run's start has committed; the file is not moved yet.
        print(status, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    files.FileWatcher._move = die
    app.file_watcher().scan_once()
    """
)


def test_a_worker_killed_after_the_commit_before_the_move_starts_nothing_twice(
    app: Aevos, database_url: str, tmp_path: Path
) -> None:
    box = _inbox(app, tmp_path / "inbox")
    box.add(_mail("disk full", message_id="<k-1@example.com>"))
    script = tmp_path / "killed.py"
    script.write_text(_KILLED_AFTER_COMMIT)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(
        [sys.executable, str(script), database_url, str(tmp_path / "inbox")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == -9, done.stderr[-2000:]
    assert done.stdout.strip() == "ACCEPTED"
    # The message is still new; its run exists.
    assert len(os.listdir(tmp_path / "inbox" / "new")) == 1
    assert len(_runs(app, "email:support-inbox:k-1")) == 1
    handled = app.file_watcher().scan_once()
    assert [h.status for h in handled] == ["DUPLICATE"]
    assert len(_runs(app, "email:support-inbox:k-1")) == 1
    assert os.listdir(tmp_path / "inbox" / "new") == []
    assert _statuses(app, "email") == ["ACCEPTED", "DUPLICATE"]


def _folder(app: Aevos, path: Path, **options: Any) -> Path:
    path.mkdir()

    @app.workflow(name="ingest")
    def ingest(ctx: Any, name: str, text: str | None) -> str:
        return name

    app.folder_trigger(
        "drop",
        path,
        workflow="ingest",
        map=options.pop("map", lambda f: {"name": f["name"], "text": f["text"]}),
        **options,
    )
    return path


def test_a_watched_folder_takes_stable_files_and_moves_them_to_done(
    app: Aevos, tmp_path: Path
) -> None:
    drop = _folder(app, tmp_path / "drop", max_bytes=1000)
    outside = tmp_path / "secret.txt"
    outside.write_text("not yours")
    (drop / "a.csv").write_text("1,2,3\n")
    (drop / "b.json.tmp").write_text("{")  # still being written
    (drop / ".c.json").write_text("{}")  # a hidden file
    (drop / "link.txt").symlink_to(outside)  # a way out of the folder
    (drop / "sub").mkdir()
    (drop / "sub" / "d.txt").write_text("in a subdirectory")
    (drop / "big.bin").write_bytes(b"x" * 1001)
    watcher = app.file_watcher()
    assert watcher.scan_once() == []  # seen once: not yet known to be complete
    (drop / "a.csv").write_text("1,2,3\n4,5,6\n")  # still growing
    handled = watcher.scan_once()
    assert [(h.name, h.status) for h in handled] == [("big.bin", "REJECTED")]
    handled = watcher.scan_once()
    assert [(h.name, h.status) for h in handled] == [("a.csv", "ACCEPTED")]
    assert sorted(os.listdir(drop / "done")) == ["a.csv"]
    assert sorted(os.listdir(drop / "failed")) == ["big.bin"]
    assert sorted(os.listdir(drop)) == [
        ".c.json",
        "b.json.tmp",
        "done",
        "failed",
        "link.txt",
        "sub",
    ]
    assert outside.read_text() == "not yours"
    (run,) = _runs(app, "folder:drop:")
    info = app.get_run(run.run_id)
    assert info.status.value == "ENQUEUED" and info.workflow == "ingest"

    # The same file dropped again under the same name is the same event.
    (drop / "a.csv").write_text("1,2,3\n4,5,6\n")
    watcher.scan_once()
    handled = watcher.scan_once()
    assert [(h.name, h.status) for h in handled] == [("a.csv", "DUPLICATE")]
    assert len(os.listdir(drop / "done")) == 2  # not overwritten
    assert len(_runs(app, "folder:drop:")) == 1
    assert _statuses(app, "folder") == ["ACCEPTED", "DUPLICATE", "REJECTED"]


def test_a_file_that_fails_its_mapping_goes_to_failed_and_is_replayed(
    app: Aevos, tmp_path: Path
) -> None:
    drop = _folder(app, tmp_path / "drop", map=lambda f: {"name": f["name"], "text": f["text"][:5]})
    (drop / "binary.dat").write_bytes(b"\xff\xfe\x00")  # no text: the mapping fails
    watcher = app.file_watcher()
    watcher.scan_once()
    assert [h.status for h in watcher.scan_once()] == ["DEAD"]
    assert os.listdir(drop / "failed") == ["binary.dat"]
    (letter,) = app.intake.list("default")
    assert letter.channel is Channel.FOLDER and letter.meta == {"file": "binary.dat"}
    trigger = app.file_triggers["drop"]
    app.file_triggers["drop"] = replace(trigger, map=lambda f: {"name": f["name"], "text": None})
    (outcome,) = app.intake.replay("default", [letter.id], actor="test")
    assert outcome.replayed
    (run,) = _runs(app, "folder:drop:")
    assert run.run_id == outcome.run_id and run.idempotency_key == f"folder:drop:{letter.event_id}"


def test_declarations_are_checked(app: Aevos, tmp_path: Path) -> None:
    with pytest.raises(DefinitionError, match="name"):
        app.folder_trigger("Bad Name", tmp_path, workflow="w")
    with pytest.raises(DefinitionError, match="max_bytes"):
        app.folder_trigger("ok", tmp_path, workflow="w", max_bytes=0)
    app.folder_trigger("ok", tmp_path, workflow="w")
    with pytest.raises(DefinitionError, match="twice"):
        app.maildir_trigger("ok", tmp_path, workflow="w")
    with pytest.raises(DefinitionError, match="not a maildir"):
        app.maildir_trigger("inbox", tmp_path / "nowhere", workflow="w")
        app.file_watcher().scan_once()


_FIXED_APP = textwrap.dedent(
    """
    from aevos import Aevos

    def make_app(database_url):
        app = Aevos(database_url)

        @app.workflow(name="ingest")
        def ingest(ctx, name, text):
            return name

        # The fixed mapping: a file that is not text starts a run too.
        app.folder_trigger("drop", DROP, workflow="ingest",
                           map=lambda f: {"name": f["name"], "text": None})
        return app
    """
)


def test_the_cli_lists_and_replays_folder_and_mail_dead_letters(
    app: Aevos, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from aevos.cli.main import cli

    drop = _folder(app, tmp_path / "drop", map=lambda f: {"name": f["name"], "text": f["text"][:5]})
    box = mailbox.Maildir(tmp_path / "inbox", create=True)
    app.maildir_trigger("inbox", tmp_path / "inbox", workflow="ingest")
    box.add(b"no headers at all\n")
    (drop / "scan.pdf").write_bytes(b"%PDF-\xff\xfe")
    watcher = app.file_watcher()
    watcher.scan_once()
    watcher.scan_once()
    module = tmp_path / "fixed_files_app.py"
    module.write_text(f"DROP = {str(drop)!r}\n" + _FIXED_APP)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    base = ["--database-url", database_url, "events", "dead-letters"]
    listed = runner.invoke(cli, [*base, "list"])
    assert listed.exit_code == 0, listed.output
    assert "folder:drop" in listed.output and "email:inbox" in listed.output
    letters = {letter.channel: letter for letter in app.intake.list("default")}
    folder_letter = letters[Channel.FOLDER]
    replayed = runner.invoke(
        cli, [*base, "replay", str(folder_letter.id), "--app", "fixed_files_app:make_app"]
    )
    assert replayed.exit_code == 0, replayed.output
    assert "run " in replayed.output
    # The mail's source is not declared by that app: it stays DEAD, and says why.
    mail_letter = letters[Channel.EMAIL]
    again = runner.invoke(
        cli, [*base, "replay", str(mail_letter.id), "--app", "fixed_files_app:make_app"]
    )
    assert again.exit_code == 1 and "replay_unavailable" in again.output


def test_a_missing_inbox_is_logged_once_and_watched_again_when_it_appears(
    app: Aevos, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    inbox = tmp_path / "later"

    @app.workflow(name="triage")
    def triage(ctx: Any, mail: dict[str, Any]) -> str:
        return "ok"

    app.maildir_trigger("late", inbox, workflow="triage", interval=0.01)
    watcher = app.file_watcher()
    with caplog.at_level("INFO", logger="aevos.events"):
        watcher.start()
        try:
            deadline = time.monotonic() + 30
            while watcher.scans < 5 and time.monotonic() < deadline:
                time.sleep(0.01)
            box = mailbox.Maildir(inbox, create=True)
            box.add(_mail("hello", message_id="<late-1@example.com>"))
            while not _runs(app, "email:late:") and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            watcher.stop()
    assert watcher.scans >= 5
    failures = [r for r in caplog.records if "scan failed" in r.getMessage()]
    assert len(failures) == 1 and "definition_error" in failures[0].getMessage()
    assert any("scanning again" in r.getMessage() for r in caplog.records)
    assert len(_runs(app, "email:late:")) == 1
