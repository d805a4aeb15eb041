"""The durable outbox: every result is stored here before anything tries to send it.

One SQLite file in WAL mode. ``synchronous=FULL``: in WAL mode that fsyncs the log at every commit, so
a result the nurse has been told is saved survives a power cut; NORMAL would keep the file consistent
but could lose the last commits. Results are rare (one a minute at most) so the fsync costs nothing
that matters, even on an SD card.

A message leaves the outbox only when ingest has acknowledged it as stored (an ack message naming it on
the device's acks topic, sent after the database commit; the publisher calls ``confirm``). The broker's
PUBACK only marks it ``sent`` (``mark_sent``): a broker can acknowledge a message and then lose it
(Mosquitto 2.0.11 does, for shared subscriptions over a restart: RELIABILITY.md). A message sent but not
acknowledged within the ack timeout is ``pending`` again and sent again; receivers de-duplicate by
``result_id``. So a crash, a lost ack or a lost message means a message is sent again, never lost.
(With ``broker.delivery_ack = "broker"`` the publisher deletes on PUBACK instead, with ``ack``.)

Audio for upload is kept as FLAC files in a RAM-backed folder (tmpfs), not in the SQLite file on the SD
card: patient audio never rests on removable storage, and it is the first thing shed when space runs
short. A reboot clears it; the rows whose audio is gone are dropped, logged and counted.

Above ``max_bytes`` (results + audio waiting) the oldest audio is shed first, then the oldest results;
every dropped result is logged at ERROR with its id and counted in ``dropped_results``, which the status
message reports. A corrupt file is set aside at open (renamed with a timestamp), whatever can be read
from it is salvaged into a fresh one, and the loss is logged at CRITICAL.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from device.core import contract
from device.core.errors import ContractError, StethError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3  # 2: sent_at and attempts (end-to-end acknowledgements); 3: refused recordings
Kind = Literal["result", "audio", "refused"]

# Version 1 outboxes (before end-to-end acks) gain the two columns; their messages count as not sent.
_MIGRATE_1_TO_2 = (
    "ALTER TABLE messages ADD COLUMN sent_at REAL",
    "ALTER TABLE messages ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0",
)
# Version 2 outboxes: the kind's CHECK gains 'refused'; SQLite cannot alter a CHECK, so the table is copied.
_MIGRATE_2_TO_3 = (
    """CREATE TABLE messages_v3 (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL CHECK (kind IN ('result', 'audio', 'refused')),
    result_id TEXT NOT NULL, topic TEXT NOT NULL, payload BLOB, bytes INTEGER NOT NULL, created_at REAL NOT NULL,
    sent_at REAL, attempts INTEGER NOT NULL DEFAULT 0, UNIQUE (kind, result_id))""",
    "INSERT INTO messages_v3 (seq, kind, result_id, topic, payload, bytes, created_at, sent_at, attempts) "
    "SELECT seq, kind, result_id, topic, payload, bytes, created_at, sent_at, attempts FROM messages",
    "DROP TABLE messages",
    "ALTER TABLE messages_v3 RENAME TO messages",
)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    -- refused: a recording that could not be analysed, reported to ingest (payload: refused JSON,
    -- result_id: its refusal_id, acknowledged in the ack's result_ids). No semicolon in comments here.
    kind TEXT NOT NULL CHECK (kind IN ('result', 'audio', 'refused')),
    result_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB,               -- result JSON, NULL for audio (whose FLAC is a file in the audio folder)
    bytes INTEGER NOT NULL,
    created_at REAL NOT NULL,
    sent_at REAL,               -- wall-clock time of the broker's last PUBACK (NULL: not sent yet)
    attempts INTEGER NOT NULL DEFAULT 0,  -- PUBACKs so far (a re-send after the ack timeout adds one)
    UNIQUE (kind, result_id)
);
CREATE INDEX IF NOT EXISTS messages_kind ON messages (kind, seq);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
-- recordings already turned into results (replay, long-file segments): a restart never analyses one twice
CREATE TABLE IF NOT EXISTS sources (key TEXT PRIMARY KEY, result_ids TEXT, error TEXT, at REAL NOT NULL);
"""
ORPHAN_AGE_S = 600.0
_CORRUPTION_CODES = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
_COUNTERS = ("dropped_results", "dropped_audio", "delivered_results", "delivered_audio", "delivered_refused")
_DELIVERED = {"result": "delivered_results", "audio": "delivered_audio", "refused": "delivered_refused"}


class OutboxError(StethError):
    """The outbox cannot store or read messages."""


class OutboxFullError(OutboxError):
    """The disk is full: the new result was not stored (everything stored before is intact)."""


@dataclass(frozen=True)
class Entry:
    """One result to store, with the FLAC of its recording when audio is uploaded."""

    result: dict[str, Any]
    flac: bytes | None = None


@dataclass(frozen=True)
class Pending:
    seq: int
    kind: Kind
    result_id: str
    topic: str
    payload: bytes
    attempts: int = 0  # times the broker took it already: > 0 means a re-send (no ack from ingest in time)


@dataclass(frozen=True)
class Confirmed:
    """What an ack removed: the seqs deleted (ids the outbox did not hold are simply not there)."""

    seqs: list[int]
    results: int
    audio: int


@dataclass(frozen=True)
class AddReport:
    result_ids: list[str]
    duplicates: list[str]  # already stored (a retry): nothing new written
    dropped_results: list[str]  # older results shed to make room (each also logged at ERROR)
    dropped_audio: int


@dataclass(frozen=True)
class Stats:
    pending_results: int
    pending_audio: int
    bytes: int
    dropped_results: int
    dropped_audio: int
    delivered_results: int
    delivered_audio: int
    awaiting_ack: int = 0  # of the pending ones: the broker has them, ingest has not acknowledged them yet
    pending_refused: int = 0  # refused recordings waiting to be reported (not in the status message)
    delivered_refused: int = 0

    def for_status(self) -> dict[str, int]:
        """The ``outbox`` object of the status message."""
        return {
            "pending_results": self.pending_results,
            "pending_audio": self.pending_audio,
            "bytes": self.bytes,
            "dropped_results": self.dropped_results,
            "dropped_audio": self.dropped_audio,
            "awaiting_ack": self.awaiting_ack,
        }


def _utc_stamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def _is_full(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "full" in str(exc).lower()


class Outbox:
    """One connection to the outbox; use one per thread (SQLite connections are not shared)."""

    def __init__(
        self,
        path: str | Path,
        audio_dir: str | Path,
        max_bytes: int,
        *,
        check: bool = True,
    ) -> None:
        self.path = Path(path)
        self.audio_dir = Path(audio_dir)
        self.max_bytes = max_bytes
        self.recovered_from: Path | None = None  # where a corrupt file was set aside, if it was
        self.salvaged = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.audio_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutboxError(
                f"cannot create the outbox folders {self.path.parent} / {self.audio_dir}: {exc.strerror}",
                "check outbox.path and audio.transient_dir and that the steth user may write there",
            ) from exc
        self._lock = threading.Lock()
        self._db = self._open(check)
        self._inode = self._current_inode()

    def _current_inode(self) -> int | None:
        try:
            return self.path.stat().st_ino
        except OSError:
            return None

    def replaced(self) -> bool:
        """True when the file at ``path`` is no longer the one this connection writes to (another
        process set a corrupt outbox aside and started a fresh one)."""
        return self._current_inode() != self._inode

    # -- opening and recovery ---------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA busy_timeout = 10000")
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.DatabaseError(f"journal_mode is {mode}, not wal")
        db.execute("PRAGMA synchronous = FULL")
        return db

    def _open(self, check: bool) -> sqlite3.Connection:
        db: sqlite3.Connection | None = None
        try:
            db = self._connect()
            problem = self._integrity_problem(db) if check else None
            if problem is None:
                self._migrate(db)
                self._reconcile_audio(db)
                return db
        except sqlite3.Error as exc:
            if db is not None:
                db.close()
            if _is_full(exc):
                raise OutboxFullError(f"cannot open the outbox {self.path}: the disk is full") from exc
            if getattr(exc, "sqlite_errorcode", None) not in _CORRUPTION_CODES:
                raise OutboxError(
                    f"cannot open the outbox {self.path}: {exc}",
                    "check outbox.path and free space; on a device, run as the service's user "
                    "(e.g. `sudo -u steth steth record ...`), which owns the outbox",
                ) from exc
            problem = str(exc)
        if db is not None:
            db.close()
        return self._set_aside_and_recreate(problem)

    @staticmethod
    def _integrity_problem(db: sqlite3.Connection) -> str | None:
        rows = [str(r[0]) for r in db.execute("PRAGMA integrity_check(20)").fetchall()]
        return None if rows == ["ok"] else "; ".join(rows[:5])

    def _migrate(self, db: sqlite3.Connection) -> None:
        if db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
            return  # the usual case: nothing to write
        # One writer at a time: the daemon and `steth record` may open an old outbox at the same moment.
        db.execute("BEGIN IMMEDIATE")
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, 1, 2, SCHEMA_VERSION):
                db.execute("ROLLBACK")
                db.close()
                raise OutboxError(
                    f"outbox {self.path} has schema version {version}; this software knows {SCHEMA_VERSION}",
                    "upgrade stethoscope-edge, or move the file aside to start a fresh outbox",
                )
            if version == 1:
                for statement in _MIGRATE_1_TO_2:
                    db.execute(statement)
                log.info("outbox %s upgraded to schema version %d (end-to-end acknowledgements)", self.path, 2)
            if version in (1, 2):
                for statement in _MIGRATE_2_TO_3:
                    db.execute(statement)
                log.info("outbox %s upgraded to schema version %d (refused recordings)", self.path, 3)
            for statement in _SCHEMA.split(";"):  # executescript would commit the transaction first
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
        except sqlite3.Error:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise

    def _set_aside_and_recreate(self, problem: str) -> sqlite3.Connection:
        salvaged = self._salvage()
        aside = self.path.with_name(f"{self.path.name}.corrupt-{_utc_stamp()}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(self.path) + suffix)
            if src.exists():
                os.replace(src, Path(str(aside) + suffix))
        self.recovered_from = aside
        log.critical(
            "OUTBOX CORRUPT: %s (%s). Set it aside as %s and started a fresh outbox; salvaged %d result(s). "
            "Results that could not be read from it are lost unless recovered by hand from that file.",
            self.path,
            problem,
            aside,
            len(salvaged),
        )
        db = self._connect()
        self._migrate(db)
        self._db = db
        for payload in salvaged:
            try:
                self.add([Entry(json.loads(payload))])
                self.salvaged += 1
            except (StethError, ValueError) as exc:
                log.error("could not salvage a result from the corrupt outbox: %s", exc)
        self._reconcile_audio(db)
        return db

    def _salvage(self) -> list[bytes]:
        """Whatever result rows can still be read from a damaged outbox."""
        out: list[bytes] = []
        try:
            with contextlib.closing(sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=1.0)) as db:
                for (payload,) in db.execute("SELECT payload FROM messages WHERE kind = 'result' ORDER BY seq"):
                    if payload:
                        out.append(bytes(payload))
        except sqlite3.Error as exc:
            log.warning("salvage from the damaged outbox stopped: %s", exc)
        return out

    def _reconcile_audio(self, db: sqlite3.Connection) -> None:
        """Audio rows whose file a reboot cleared are dropped; files without a row are deleted."""
        rows = db.execute("SELECT seq, result_id FROM messages WHERE kind = 'audio'").fetchall()
        known = set()
        for seq, result_id in rows:
            known.add(result_id)
            if not self._audio_file(result_id).exists():
                log.warning("audio of result %s is gone (transient storage was cleared); not sending it", result_id)
                db.execute("BEGIN IMMEDIATE")
                db.execute("DELETE FROM messages WHERE seq = ?", (seq,))
                self._bump(db, "dropped_audio")
                db.execute("COMMIT")
        for file in self.audio_dir.glob("*.flac*"):
            with contextlib.suppress(OSError):
                # Another process may be between writing a file and committing its row: spare young files.
                if file.name.split(".", 1)[0] not in known and time.time() - file.stat().st_mtime > ORPHAN_AGE_S:
                    file.unlink()

    # -- writing ----------------------------------------------------------------------------------------

    def _audio_file(self, result_id: str) -> Path:
        return self.audio_dir / f"{result_id}.flac"

    @staticmethod
    def _bump(db: sqlite3.Connection, name: str, by: int = 1) -> None:
        db.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
            (name, by),
        )

    @contextlib.contextmanager
    def _write(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction. ``durable=False``: committed without an fsync (synchronous=NORMAL for
        this commit; the WAL still keeps it across a crash of the process, only a power cut can undo it),
        for writes whose loss only means a message is sent again, which receivers absorb."""
        with self._lock:
            db = self._db
            if not durable:
                db.execute("PRAGMA synchronous = NORMAL")
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            finally:
                if not durable:
                    db.execute("PRAGMA synchronous = FULL")

    def _stage_audio(self, result_id: str, flac: bytes) -> bool:
        """Write the FLAC to the RAM folder (atomically); False when there is no room."""
        target = self._audio_file(result_id)
        tmp = target.with_suffix(".flac.tmp")
        try:
            tmp.write_bytes(flac)
            os.replace(tmp, target)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                return False
            raise OutboxError(f"cannot write audio to {self.audio_dir}: {exc.strerror}") from exc
        return True

    def add(self, entries: Sequence[Entry], source_key: str | None = None) -> AddReport:
        """Store results (and their audio) in one transaction; validated against the contract first.

        Idempotent: a result_id already stored is not stored again. With ``source_key`` the recording
        is remembered as done in the same transaction, so a crash never analyses it twice.
        Raises ContractError for an invalid result, OutboxFullError when the disk is full.
        """
        encoded = [(entry, contract.encode("result", entry.result)) for entry in entries]
        for entry, payload in encoded:
            if len(payload) > contract.MAX_RESULT_BYTES:
                raise ContractError(f"result {entry.result['result_id']} is {len(payload)} bytes, over the limit")
        staged, dropped_audio = self._stage_all(entries)
        now = time.time()
        try:
            with self._write() as db:
                ids, duplicates = self._insert(db, encoded, staged, now)
                if dropped_audio:
                    self._bump(db, "dropped_audio", dropped_audio)
                if source_key is not None:
                    db.execute(
                        "INSERT OR REPLACE INTO sources (key, result_ids, error, at) VALUES (?, ?, NULL, ?)",
                        (source_key, json.dumps([e.result["result_id"] for e in entries]), now),
                    )
                shed_files, dropped_results = self._enforce_cap(db, keep=set(ids))
        except sqlite3.Error as exc:
            self._unlink_audio(staged)
            wanted = ", ".join(e.result["result_id"] for e in entries)
            if _is_full(exc):
                raise OutboxFullError(
                    f"the disk holding the outbox {self.path} is full: result(s) {wanted} were NOT stored",
                    "free space on the device (results already stored are safe); the answer shown is still valid",
                ) from exc
            raise OutboxError(f"cannot store result(s) {wanted} in the outbox {self.path}: {exc}") from exc
        # A retry rewrote the audio file of a result already stored: keep it only if its row still waits.
        with self._lock:
            unused = [
                rid
                for rid in set(staged) & set(duplicates)
                if self._db.execute("SELECT 1 FROM messages WHERE kind = 'audio' AND result_id = ?", (rid,)).fetchone()
                is None
            ]
        self._unlink_audio(unused + shed_files)
        return AddReport(ids, duplicates, dropped_results, dropped_audio + len(shed_files))

    def _stage_all(self, entries: Sequence[Entry]) -> tuple[list[str], int]:
        staged: list[str] = []
        dropped = 0
        for entry in entries:
            rid = entry.result["result_id"]
            if entry.flac is None:
                continue
            if len(entry.flac) > min(contract.MAX_AUDIO_BYTES, self.max_bytes // 2):
                log.warning("audio of result %s is %d bytes, too big to queue; not sending it", rid, len(entry.flac))
                dropped += 1
            elif self._stage_audio(rid, entry.flac):
                staged.append(rid)
            else:
                log.warning("no room in %s for the audio of result %s; not sending it", self.audio_dir, rid)
                dropped += 1
        return staged, dropped

    def _insert(
        self, db: sqlite3.Connection, encoded: list[tuple[Entry, bytes]], staged: list[str], now: float
    ) -> tuple[list[str], list[str]]:
        ids, duplicates = [], []
        for entry, payload in encoded:
            rid = entry.result["result_id"]
            device_id = entry.result["device_id"]
            cur = db.execute(
                "INSERT OR IGNORE INTO messages (kind, result_id, topic, payload, bytes, created_at) "
                "VALUES ('result', ?, ?, ?, ?, ?)",
                (rid, contract.results_topic(device_id), payload, len(payload), now),
            )
            if cur.rowcount == 0:
                duplicates.append(rid)
                continue
            ids.append(rid)
            if rid in staged and entry.flac is not None:
                db.execute(
                    "INSERT OR IGNORE INTO messages (kind, result_id, topic, payload, bytes, created_at) "
                    "VALUES ('audio', ?, ?, NULL, ?, ?)",
                    (rid, contract.audio_topic(device_id, rid), len(entry.flac), now),
                )
        return ids, duplicates

    def _unlink_audio(self, result_ids: Sequence[str]) -> None:
        for rid in result_ids:
            with contextlib.suppress(OSError):
                self._audio_file(rid).unlink()

    def _enforce_cap(self, db: sqlite3.Connection, keep: set[str]) -> tuple[list[str], list[str]]:
        """Shed the oldest audio, then the oldest results, until the waiting bytes fit the cap.

        Among each kind, messages the broker already took (awaiting ingest's ack, most likely stored
        already) go before those never sent.
        """
        total = db.execute("SELECT COALESCE(SUM(bytes), 0) FROM messages").fetchone()[0]
        shed_audio: list[str] = []
        dropped: list[str] = []
        while total > self.max_bytes:
            row = db.execute(
                "SELECT seq, result_id, bytes FROM messages WHERE kind = 'audio' ORDER BY sent_at IS NULL, seq LIMIT 1"
            )
            found = row.fetchone()
            if found is not None:
                seq, rid, size = found
                db.execute("DELETE FROM messages WHERE seq = ?", (seq,))
                self._bump(db, "dropped_audio")
                log.warning("outbox over its %d-byte cap: shed the audio of result %s", self.max_bytes, rid)
                shed_audio.append(rid)
                total -= size
                continue
            found = db.execute(
                "SELECT seq, result_id, bytes, attempts FROM messages WHERE kind = 'result' "
                "ORDER BY sent_at IS NULL, seq"
            ).fetchall()
            victim = next((r for r in found if r[1] not in keep), None)
            if victim is None:
                break  # only what we are adding is left: keep it rather than drop it unseen
            seq, rid, size, attempts = victim
            db.execute("DELETE FROM messages WHERE seq = ?", (seq,))
            self._bump(db, "dropped_results")
            log.error(
                "RESULT DROPPED: outbox over its %d-byte cap while offline; dropped the oldest result %s%s "
                "(raise outbox.max_bytes or restore the link)",
                self.max_bytes,
                rid,
                f" (the broker took it {attempts} time(s), ingest never acknowledged it)" if attempts else "",
            )
            dropped.append(rid)
            total -= size
        return shed_audio, dropped

    def note_failure(self, source_key: str, error: str) -> None:
        """Remember that a recording could not be analysed, so it is reported once, not retried forever."""
        self.mark_done(source_key, error)

    def add_refusal(self, message: dict[str, Any], source_key: str | None = None) -> bool:
        """Store a refused recording's report (contract: refused), and with ``source_key`` remember the
        recording as dealt with, in one transaction. Idempotent by ``refusal_id``; False when it was
        already stored. Raises ContractError for an invalid message, OutboxFullError when the disk is full."""
        payload = contract.encode("refused", message)
        if len(payload) > contract.MAX_REFUSED_BYTES:
            raise ContractError(f"refusal {message['refusal_id']} is {len(payload)} bytes, over the limit")
        now = time.time()
        try:
            with self._write() as db:
                cur = db.execute(
                    "INSERT OR IGNORE INTO messages (kind, result_id, topic, payload, bytes, created_at) "
                    "VALUES ('refused', ?, ?, ?, ?, ?)",
                    (message["refusal_id"], contract.refused_topic(message["device_id"]), payload, len(payload), now),
                )
                if source_key is not None:
                    db.execute(
                        "INSERT OR REPLACE INTO sources (key, result_ids, error, at) VALUES (?, NULL, ?, ?)",
                        (source_key, message["message"][:1000], now),
                    )
        except sqlite3.Error as exc:
            if _is_full(exc):
                raise OutboxFullError(
                    f"the disk holding the outbox {self.path} is full: the refusal of {message.get('recording')} "
                    "was NOT stored",
                    "free space on the device",
                ) from exc
            raise OutboxError(f"cannot store a refusal in the outbox {self.path}: {exc}") from exc
        return cur.rowcount > 0

    def mark_done(self, source_key: str, error: str | None = None) -> None:
        """Remember a recording (or a whole file) as dealt with."""
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO sources (key, result_ids, error, at) VALUES (?, NULL, ?, ?)",
                (source_key, error[:1000] if error else None, time.time()),
            )

    def source_done(self, source_key: str) -> bool:
        with self._lock:
            row = self._db.execute("SELECT 1 FROM sources WHERE key = ?", (source_key,)).fetchone()
        return row is not None

    def note_dropped_result(self, result_id: str, reason: str) -> None:
        """Count a result that never made it into the outbox (e.g. disk full), if we can still write."""
        log.error("RESULT DROPPED: %s was not stored: %s", result_id, reason)
        try:
            with self._write() as db:
                self._bump(db, "dropped_results")
        except sqlite3.Error as exc:
            log.error("could not count the dropped result either: %s", exc)

    # -- reading and acknowledging ----------------------------------------------------------------------

    def pending(
        self,
        limit: int,
        exclude: Sequence[int] = (),
        max_audio: int | None = None,
        *,
        ack_timeout_s: float | None = None,
        max_resend: int = 0,
        due_before: float | None = None,
    ) -> list[Pending]:
        """The next messages to send: results before audio, oldest first, skipping those in flight.

        ``max_audio`` bounds the recordings read into memory at once (each can be megabytes).
        With ``ack_timeout_s`` (end-to-end acks) a message already sent is due again only once that long
        has passed since its PUBACK without an ack, and at most ``max_resend`` of those are returned:
        after a long ingest outage thousands can be due at once, and they go a few at a time, not in one
        burst. ``due_before`` (wall time): a message the broker took before it is due now, whatever the
        timeout (an ingest worker announced it has just subscribed, so it may have missed it). Without
        ``ack_timeout_s`` (acks from the broker) every message is due.
        """
        marks = ",".join("?" * len(exclude))
        skip = f"seq NOT IN ({marks})" if exclude else "1"
        select = f"SELECT seq, kind, result_id, topic, payload, attempts FROM messages WHERE {skip} AND "  # noqa: S608 - placeholders only
        order = " ORDER BY kind = 'audio', seq LIMIT ?"
        with self._lock:
            if ack_timeout_s is None:
                rows = self._db.execute(select + "1" + order, (*exclude, limit)).fetchall()
            else:
                rows = self._db.execute(select + "sent_at IS NULL" + order, (*exclude, limit)).fetchall()
                if max_resend > 0:
                    now = time.time()
                    # due: acked by the broker longer ago than the timeout, or "in the future" (the clock
                    # was set back, as a Raspberry Pi's is when NTP corrects it after a boot without RTC)
                    due = max(now - ack_timeout_s, due_before or 0.0)
                    rows += self._db.execute(
                        select + "sent_at IS NOT NULL AND (sent_at <= ? OR sent_at > ?)" + order,
                        (*exclude, due, now + ack_timeout_s, max_resend),
                    ).fetchall()
                    rows = sorted(rows, key=lambda r: (r[1] == "audio", r[0]))[:limit]
        out: list[Pending] = []
        for seq, kind, rid, topic, stored, attempts in rows:
            payload = stored
            if kind == "audio":
                if max_audio is not None and sum(p.kind == "audio" for p in out) >= max_audio:
                    break  # audio comes last: nothing after it to send now
                try:
                    payload = self._audio_file(rid).read_bytes()
                except OSError:
                    log.warning("audio of result %s is gone from %s; not sending it", rid, self.audio_dir)
                    self._delete(seq, kind, rid, counter="dropped_audio")
                    continue
            out.append(Pending(seq, kind, rid, topic, bytes(payload), attempts))
        return out

    def _delete(self, seq: int, kind: str, result_id: str, counter: str) -> bool:
        with self._write() as db:
            gone = db.execute("DELETE FROM messages WHERE seq = ?", (seq,)).rowcount
            if gone:
                self._bump(db, counter)
        if kind == "audio":
            with contextlib.suppress(OSError):
                self._audio_file(result_id).unlink()
        return bool(gone)

    def ack(self, item: Pending) -> bool:
        """Delivered (acks from the broker): remove it. False if it was already gone (another sender)."""
        return self._delete(item.seq, item.kind, item.result_id, _DELIVERED[item.kind])

    def mark_sent(self, items: Sequence[Pending]) -> int:
        """The broker has these (PUBACK): they wait for ingest's ack now. Returns how many were still here.

        Not fsynced: a power cut can only forget the mark, and the message is then sent again sooner.
        """
        if not items:
            return 0
        now = time.time()
        with self._write(durable=False) as db:
            return sum(
                db.execute(
                    "UPDATE messages SET sent_at = ?, attempts = attempts + 1 WHERE seq = ?", (now, item.seq)
                ).rowcount
                for item in items
            )

    def confirm(self, result_ids: Sequence[str], audio_ids: Sequence[str]) -> Confirmed:
        """Ingest has stored these (an ack message): delete them, count them delivered.

        ``result_ids`` name results and refused recordings alike (their ids are UUIDs of one space).
        Ids this outbox does not hold (already confirmed, another device's, dropped) are ignored, so a
        repeated or stray ack is harmless. Not fsynced: a power cut can only bring a message back, which is
        then sent again and acknowledged again (an ack per result must cost less than a result's arrival,
        or a broker's queue of acks for the device overflows while it drains a backlog).
        """
        gone: list[tuple[int, str, str]] = []
        with self._write(durable=False) as db:
            for kinds, ids in ((("result", "refused"), result_ids), (("audio",), audio_ids)):
                for start in range(0, len(ids), 500):  # SQLite's limit on parameters
                    chunk = list(ids[start : start + 500])
                    marks = ",".join("?" * len(chunk))
                    kind_marks = ",".join("?" * len(kinds))
                    rows = db.execute(
                        f"DELETE FROM messages WHERE kind IN ({kind_marks}) AND result_id IN ({marks}) "  # noqa: S608
                        "RETURNING seq, kind, result_id",
                        (*kinds, *chunk),
                    ).fetchall()
                    gone += [(seq, kind, rid) for seq, kind, rid in rows]
            for kind, counter in _DELIVERED.items():
                n = sum(k == kind for _, k, _ in gone)
                if n:
                    self._bump(db, counter, n)
        self._unlink_audio([rid for _, kind, rid in gone if kind == "audio"])
        results = sum(kind == "result" for _, kind, _ in gone)
        audio = sum(kind == "audio" for _, kind, _ in gone)
        return Confirmed([seq for seq, _, _ in gone], results, audio)

    def stats(self) -> Stats:
        with self._lock:
            counts = dict.fromkeys(("result", "audio", "refused"), (0, 0))
            awaiting = 0
            for kind, n, size, sent in self._db.execute(
                "SELECT kind, COUNT(*), COALESCE(SUM(bytes), 0), COUNT(sent_at) FROM messages GROUP BY kind"
            ):
                counts[kind] = (n, size)
                awaiting += sent
            counters = dict.fromkeys(_COUNTERS, 0)
            counters.update(dict(self._db.execute("SELECT name, value FROM counters").fetchall()))
        return Stats(
            pending_results=counts["result"][0],
            pending_audio=counts["audio"][0],
            bytes=counts["result"][1] + counts["audio"][1] + counts["refused"][1],
            dropped_results=counters["dropped_results"],
            dropped_audio=counters["dropped_audio"],
            delivered_results=counters["delivered_results"],
            delivered_audio=counters["delivered_audio"],
            awaiting_ack=awaiting,
            pending_refused=counts["refused"][0],
            delivered_refused=counters["delivered_refused"],
        )

    def result_ids(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT result_id FROM messages WHERE kind = 'result' ORDER BY seq")]

    def close(self) -> None:
        """Fold the WAL into the main file and close (the next open starts clean and fast)."""
        with self._lock:
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                log.warning("outbox checkpoint at close failed (harmless, done at next open): %s", exc)
            self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
