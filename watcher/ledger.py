"""The watcher's ledger: one SQLite row per watched file, so each content version runs once.

Row (``files``): absolute path, last seen size and mtime, sha256 of the content, the version
key (sent as ``Idempotency-Key``), job id, state, error, submission attempts, next retry time,
delivered output. States::

    pending ──submit──► submitted ──job succeeded──► done
       │  ▲ (service down: stays pending, retried with backoff)
       │  └───────────── aat watch --retry PATH ◄──── failed
       └─────────────────── rejected / job failed ──► failed

A file whose content (or preset) changes becomes ``pending`` again with a new version key; an
unchanged file (same size and mtime, or same hash) is left alone across restarts.
``outputs`` remembers what the watcher (or the service on its behalf) wrote, so those files are
never taken as inputs. WAL mode: the daemon and ``aat watch --status/--retry`` share the file.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from service.core.errors import NotFound

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY,
    root TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    version_key TEXT NOT NULL,
    preset_fp TEXT NOT NULL DEFAULT '',
    retry_gen INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    job_id TEXT,
    error_code TEXT,
    error_message TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try_at REAL NOT NULL DEFAULT 0,
    present INTEGER NOT NULL DEFAULT 1,
    output_path TEXT,
    taken_at REAL,
    submitted_at REAL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS files_state ON files(state, next_try_at);
CREATE TABLE IF NOT EXISTS outputs (
    path TEXT PRIMARY KEY,
    sha256 TEXT
);
CREATE INDEX IF NOT EXISTS outputs_sha ON outputs(sha256);
CREATE TABLE IF NOT EXISTS scans (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    full_scans INTEGER NOT NULL,
    last_at REAL NOT NULL
);
"""

STATES = ("pending", "submitted", "done", "failed")


@dataclass(frozen=True, slots=True)
class Entry:
    """One ledger row."""

    path: Path
    root: Path
    size: int
    mtime_ns: int
    sha256: str
    version_key: str
    preset_fp: str
    retry_gen: int
    state: str
    job_id: str | None
    error_code: str | None
    error_message: str | None
    attempts: int
    next_try_at: float
    present: bool
    output_path: str | None
    taken_at: float | None
    submitted_at: float | None
    updated_at: float


class Ledger:
    """SQLite-backed record of every watched file's version, job and outcome."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(str(path), timeout=30.0, isolation_level=None,
                                   check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # reads
    def get(self, path: Path) -> Entry | None:
        row = self._db.execute("SELECT * FROM files WHERE path = ?", (str(path),)).fetchone()
        return _entry(row) if row else None

    def entries(self, state: str | None = None) -> list[Entry]:
        if state is None:
            rows = self._db.execute("SELECT * FROM files ORDER BY path").fetchall()
        else:
            rows = self._db.execute(
                "SELECT * FROM files WHERE state = ? ORDER BY path", (state,)).fetchall()
        return [_entry(r) for r in rows]

    def due(self, state: str, now: float, limit: int) -> list[Entry]:
        """Rows in ``state`` whose next try time has come, oldest first."""
        rows = self._db.execute(
            "SELECT * FROM files WHERE state = ? AND present = 1 AND next_try_at <= ? "
            "ORDER BY next_try_at, updated_at LIMIT ?", (state, now, limit)).fetchall()
        return [_entry(r) for r in rows]

    def present_under(self, folder: Path) -> list[Path]:
        """Paths of present rows at or below ``folder``."""
        prefix = str(folder).rstrip("/") + "/"
        rows = self._db.execute(
            "SELECT path FROM files WHERE present = 1 AND substr(path, 1, ?) = ?",
            (len(prefix), prefix)).fetchall()
        return [Path(r["path"]) for r in rows]

    def note_full_scan(self, now: float) -> int:
        """Count one finished full scan of every watched folder; returns the count so far
        (kept across restarts: tests and `aat watch --status` read it)."""
        with self._tx() as db:
            db.execute("INSERT INTO scans (id, full_scans, last_at) VALUES (1, 1, ?) "
                       "ON CONFLICT (id) DO UPDATE SET full_scans = full_scans + 1, "
                       "last_at = excluded.last_at", (now,))
        return self.full_scans()[0]

    def full_scans(self) -> tuple[int, float | None]:
        """How many full scans have finished, and when the last one did (epoch seconds)."""
        row = self._db.execute("SELECT full_scans, last_at FROM scans WHERE id = 1").fetchone()
        return (int(row["full_scans"]), float(row["last_at"])) if row else (0, None)

    def counts(self) -> dict[str, int]:
        rows = self._db.execute(
            "SELECT state, count(*) AS n FROM files WHERE present = 1 GROUP BY state").fetchall()
        out = dict.fromkeys(STATES, 0)
        out.update({r["state"]: r["n"] for r in rows})
        return out

    def is_output(self, path: Path, sha256: str | None = None) -> bool:
        """True when ``path`` (or, if given, content ``sha256``) was written as a result."""
        row = self._db.execute("SELECT 1 FROM outputs WHERE path = ?", (str(path),)).fetchone()
        if row is None and sha256 is not None:
            row = self._db.execute(
                "SELECT 1 FROM outputs WHERE sha256 = ?", (sha256,)).fetchone()
        return row is not None

    def wrote(self, path: Path, sha256: str) -> bool:
        """True when the bytes ``sha256`` at ``path`` are a result this watcher recorded."""
        row = self._db.execute("SELECT 1 FROM outputs WHERE path = ? AND sha256 = ?",
                               (str(path), sha256)).fetchone()
        return row is not None

    # writes
    def record_version(self, path: Path, root: Path, sig: tuple[int, int], sha256: str,
                       version_key: str, preset_fp: str) -> None:
        """Store a new content version as ``pending`` (replacing any older version's row)."""
        now = time.time()
        with self._tx() as db:
            db.execute(
                "INSERT INTO files (path, root, size, mtime_ns, sha256, version_key, preset_fp, "
                "state, attempts, next_try_at, present, taken_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', 0, 0, 1, ?, ?) "
                "ON CONFLICT(path) DO UPDATE SET root=excluded.root, size=excluded.size, "
                "mtime_ns=excluded.mtime_ns, sha256=excluded.sha256, "
                "version_key=excluded.version_key, preset_fp=excluded.preset_fp, "
                "state='pending', job_id=NULL, retry_gen=0, error_code=NULL, "
                "error_message=NULL, attempts=0, next_try_at=0, present=1, output_path=NULL, "
                "taken_at=excluded.taken_at, submitted_at=NULL, updated_at=excluded.updated_at",
                (str(path), str(root), sig[0], sig[1], sha256, version_key, preset_fp, now, now))

    def record_failed_version(self, path: Path, root: Path, sig: tuple[int, int], sha256: str,
                              version_key: str, preset_fp: str, code: str, message: str) -> None:
        """Store a new version that failed before submission (e.g. it does not decode)."""
        self.record_version(path, root, sig, sha256, version_key, preset_fp)
        self.mark_failed(path, code, message)

    def touch(self, path: Path, sig: tuple[int, int], preset_fp: str) -> None:
        """Same version under a new stat signature (a re-save of identical bytes)."""
        self._update(path, size=sig[0], mtime_ns=sig[1], preset_fp=preset_fp, present=1)

    def mark_submitted(self, path: Path, job_id: str, next_poll_at: float) -> None:
        """The service holds job ``job_id`` for this version; poll it at ``next_poll_at``."""
        with self._tx() as db:
            db.execute(
                "UPDATE files SET state='submitted', job_id=?, error_code=NULL, "
                "error_message=NULL, next_try_at=?, submitted_at=coalesce(submitted_at, ?), "
                "attempts = CASE WHEN state='submitted' THEN attempts + 1 ELSE 0 END, "
                "updated_at=? WHERE path=?",
                (job_id, next_poll_at, time.time(), time.time(), str(path)))

    def mark_retry_later(self, path: Path, at: float, code: str, message: str) -> None:
        """Submission could not reach the service: stay pending, try again at ``at``."""
        with self._tx() as db:
            db.execute(
                "UPDATE files SET attempts = attempts + 1, next_try_at = ?, error_code = ?, "
                "error_message = ?, updated_at = ? WHERE path = ?",
                (at, code, message, time.time(), str(path)))

    def mark_done(self, path: Path, output_path: str | None, output_sha256: str | None,
                  output_abs: Path | None) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE files SET state='done', output_path=?, error_code=NULL, "
                "error_message=NULL, updated_at=? WHERE path=?",
                (output_path, time.time(), str(path)))
            if output_abs is not None:
                db.execute("INSERT OR REPLACE INTO outputs (path, sha256) VALUES (?, ?)",
                           (str(output_abs), output_sha256))

    def remember_output(self, output_abs: Path, sha256: str | None) -> None:
        """Reserve a path (and content hash) as a result, before the result exists; a path
        reserved again without a hash keeps the hash of what was written there."""
        with self._tx() as db:
            db.execute("INSERT INTO outputs (path, sha256) VALUES (?, ?) ON CONFLICT(path) "
                       "DO UPDATE SET sha256 = COALESCE(excluded.sha256, outputs.sha256)",
                       (str(output_abs), sha256))

    def mark_failed(self, path: Path, code: str, message: str) -> None:
        self._update(path, state="failed", error_code=code, error_message=message)

    def mark_missing(self, path: Path) -> None:
        self._update(path, present=0)

    def mark_pending(self, path: Path) -> None:
        """Submit this version again (the service lost the job)."""
        self._update(path, state="pending", job_id=None, next_try_at=0, submitted_at=None)

    def retry(self, path: Path) -> int:
        """Send failed rows at ``path`` (a file, or every row below a folder) again.

        Returns how many rows were reset; raises NotFound when none matched.
        """
        exact = str(path)
        prefix = exact.rstrip("/") + "/"
        with self._tx() as db:
            cur = db.execute(
                "UPDATE files SET state='pending', retry_gen = retry_gen + 1, job_id=NULL, "
                "error_code=NULL, error_message=NULL, attempts=0, next_try_at=0, updated_at=? "
                "WHERE state='failed' AND (path = ? OR substr(path, 1, ?) = ?)",
                (time.time(), exact, len(prefix), prefix))
        if cur.rowcount == 0:
            raise NotFound(
                f"no failed file at {path} in the watch ledger; see `aat watch --status`")
        return cur.rowcount

    def _update(self, path: Path, **fields: object) -> None:
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self._tx() as db:
            db.execute(f"UPDATE files SET {cols}, updated_at = ? WHERE path = ?",  # noqa: S608
                       (*fields.values(), time.time(), str(path)))


def _entry(row: sqlite3.Row) -> Entry:
    return Entry(
        path=Path(row["path"]), root=Path(row["root"]), size=row["size"],
        mtime_ns=row["mtime_ns"], sha256=row["sha256"], version_key=row["version_key"],
        preset_fp=row["preset_fp"],
        retry_gen=row["retry_gen"], state=row["state"], job_id=row["job_id"],
        error_code=row["error_code"], error_message=row["error_message"],
        attempts=row["attempts"], next_try_at=row["next_try_at"],
        present=bool(row["present"]), output_path=row["output_path"],
        taken_at=row["taken_at"], submitted_at=row["submitted_at"],
        updated_at=row["updated_at"],
    )
