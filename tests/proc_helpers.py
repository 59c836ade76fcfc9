"""Real processes for tests and benchmarks: a free loopback port, waiting for a URL to answer,
and a program (`aat up|serve|emulate|runner`, the watcher) in its own process that is always
stopped, its output in a log whose tail is shown when it fails to start.

Tests import it by name, like ``pg_helpers`` (``tests/`` is on pytest's path); the ``bench/``
programs put ``tests/`` on ``sys.path`` first.

    with aat_service("up", env={"AAT_DATA_DIR": str(tmp / "data")}, log=tmp / "up.log") as svc:
        httpx.get(svc.url + "/v1/jobs")  # /v1/health answered 2xx; stopped on the way out
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
SCRUBBED = ("AAT_", "RUNPOD_")  # this machine's own settings never reach a process under test


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def aat_command(*args: str) -> list[str]:
    """`aat ARGS` run by this interpreter, with Ctrl-C on as in a user's terminal: a test run
    started in the background by a script (no job control) has SIGINT ignored, which a child
    inherits, and Python then never raises KeyboardInterrupt."""
    return [sys.executable, "-c", "import signal; signal.signal(signal.SIGINT, "
            "signal.default_int_handler); from service.cli import main; main()", *args]


def scrubbed_env(**overrides: str) -> dict[str, str]:
    """This process's environment without ``AAT_*``/``RUNPOD_*`` (a clean user), plus
    ``overrides``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(SCRUBBED)}
    env.update(overrides)
    return env


class NotReady(RuntimeError):
    """A process did not answer at its URL in time, or exited first."""


def wait_http(url: str, timeout: float = 60.0, *, poll_s: float = 0.1,
              proc: subprocess.Popen[bytes] | None = None, what: str | None = None,
              ) -> httpx.Response:
    """Poll ``url`` until it answers 2xx; the response. Raises :class:`NotReady` after
    ``timeout`` seconds, or as soon as ``proc`` (the process meant to serve it) has exited."""
    name = what or url
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise NotReady(f"{name} exited with status {proc.returncode} before {url} answered")
        try:
            resp = httpx.get(url, timeout=1.0)
            if resp.is_success:
                return resp
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise NotReady(f"{name} did not answer at {url} within {timeout:g} s")
        time.sleep(poll_s)


@dataclass(eq=False)
class ServiceProcess:
    """``args`` (a command line) in its own process, started by :meth:`start` (or ``with``),
    stopped by :meth:`stop` (SIGTERM, then SIGKILL after ``stop_timeout`` s) however the block
    ends.

    * ``env``: overrides on top of this process's environment, from which ``AAT_*`` and
      ``RUNPOD_*`` are removed first unless ``scrub=False``; after construction ``env`` is the
      whole environment the process gets (change it before :meth:`start` if need be).
    * ``log``: stdout and stderr go to this file (``append_log`` keeps what is there; one log
      across restarts); without one they are discarded.
    * ``ready_url``: :meth:`start` returns once it answers 2xx within ``timeout`` s; otherwise
      the process is killed and :class:`NotReady` names the log's tail.
    * ``new_session``: the process leads its own process group, and signals go to the whole
      group (a Celery runner and its pool children).
    * ``url``: the service's base URL, kept for callers (see :func:`aat_service`).
    """

    args: Sequence[str | os.PathLike[str]]
    _: KW_ONLY
    env: dict[str, str] = field(default_factory=dict, repr=False)  # may hold secrets
    scrub: bool = True
    cwd: str | os.PathLike[str] = ROOT
    log: Path | None = None
    append_log: bool = False
    ready_url: str | None = None
    timeout: float = 60.0
    poll_s: float = 0.1
    new_session: bool = False
    stop_timeout: float = 30.0
    url: str | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.args = [str(part) for part in self.args]
        self.env = scrubbed_env(**self.env) if self.scrub else {**os.environ, **self.env}

    def start(self) -> ServiceProcess:
        """Start the process (again, once a previous one has ended) and wait until it is
        ready."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError(f"{self.name} is already running")
        if self.log is None:
            self.proc = subprocess.Popen(self.args, cwd=self.cwd, env=self.env,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                         start_new_session=self.new_session)
        else:
            with self.log.open("ab" if self.append_log else "wb") as out:
                self.proc = subprocess.Popen(self.args, cwd=self.cwd, env=self.env,
                                             stdout=out, stderr=subprocess.STDOUT,
                                             start_new_session=self.new_session)
        if self.ready_url is not None:
            try:
                wait_http(self.ready_url, self.timeout, poll_s=self.poll_s, proc=self.proc,
                          what=self.name)
            except NotReady as exc:
                self.kill()
                raise NotReady(f"{exc}\n{self.log_tail()}") from None
        return self

    @property
    def name(self) -> str:
        """How a message names the process: the command after the interpreter."""
        words = self.args[1:] if self.args[0] == sys.executable else self.args
        return "`" + " ".join(words)[:120] + "`"

    def log_tail(self, chars: int = 3000) -> str:
        """The last ``chars`` characters of the log (what a failure message shows)."""
        if self.log is None or not self.log.exists():
            return "(no log)"
        return self.log.read_text(errors="replace")[-chars:]

    def _signal(self, sig: int) -> None:
        assert self.proc is not None
        try:
            if self.new_session:
                os.killpg(self.proc.pid, sig)
            else:
                self.proc.send_signal(sig)
        except ProcessLookupError:
            pass

    def stop(self) -> int | None:
        """SIGTERM and wait up to ``stop_timeout`` s, then SIGKILL; the exit status (None if it
        was never started)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.wait()

    def kill(self) -> int | None:
        """SIGKILL (a crash: nothing is cleaned up) and reap; the exit status (None if it was
        never started)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self._signal(signal.SIGKILL)
        return self.proc.wait()

    def __enter__(self) -> ServiceProcess:
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def aat_service(*args: str, env: Mapping[str, str] | None = None, port: int | None = None,
                command: Sequence[str | os.PathLike[str]] | None = None,
                **options: Any) -> ServiceProcess:
    """`aat ARGS` (``up`` or ``serve``) on ``port`` (a free one by default), not started yet:
    ``AAT_PORT`` set in its environment, ready when ``/v1/health`` answers, its base URL in
    ``.url``. ``command`` replaces ``python -m service.cli`` (the installed ``aat`` script).
    ``options`` go to :class:`ServiceProcess`."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    program = [*(command or aat_command()), *args]
    return ServiceProcess(program, env={**(env or {}), "AAT_PORT": str(port)}, url=url,
                          ready_url=url + "/v1/health", **options)
