"""Hosts for the many-hosts test: Linux network namespaces joined by veth links to a bridge.

``Network`` (root only) makes a bridge with ``<subnet>.1`` in the root namespace and one
namespace per host at ``<subnet>.<10+i>``; every address is one this test created, and the
subnet is chosen among ``10.213.0.0/16``'s /24s not already on the machine. ``Forward`` makes a
loopback-only server (Redis, PostgreSQL, the RunPod emulator) reachable on the bridge address,
and remembers which hosts connected. Everything is torn down at ``close()``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import threading
from collections import Counter
from pathlib import Path
from typing import Any


def sh(*args: str) -> str:
    out = subprocess.run(list(args), capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {out.stderr.strip()}")
    return out.stdout


class Host:
    def __init__(self, name: str, netns: str, address: str) -> None:
        self.name, self.netns, self.address = name, netns, address
        self.procs: list[subprocess.Popen[bytes]] = []

    def popen(self, argv: list[str], env: dict[str, str], log: Path, cwd: Path
              ) -> subprocess.Popen[bytes]:
        """Run ``argv`` on this host: in its network namespace, with its own host name."""
        wrapped = ["ip", "netns", "exec", self.netns, "unshare", "--uts", "sh", "-c",
                   f'hostname {self.name} && exec "$@"', "sh", *argv]
        fh = open(log, "ab")  # noqa: SIM115 (closed by the child's exit; the parent drops it)
        proc = subprocess.Popen(wrapped, env=env, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
        fh.close()
        self.procs.append(proc)
        return proc

    def pids(self) -> list[int]:
        return [int(p) for p in sh("ip", "netns", "pids", self.netns).split()]

    def signal_all(self, sig: int) -> list[int]:
        """Send ``sig`` to every process in this host's namespace (a host dying: kill -9)."""
        pids = self.pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        return pids


class Network:
    def __init__(self, names: list[str]) -> None:
        self.tag = secrets.token_hex(2)
        used = sh("ip", "-4", "-o", "addr")
        third = next(n for n in range(17, 250) if f" 10.213.{n}." not in used)
        self.subnet = f"10.213.{third}"
        self.gateway = f"{self.subnet}.1"
        self.bridge = f"aatbr{self.tag}"
        self.hosts: dict[str, Host] = {}
        self.links: list[str] = []
        try:
            sh("ip", "link", "add", self.bridge, "type", "bridge")
            sh("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            sh("ip", "link", "set", self.bridge, "up")
            for i, name in enumerate(names):
                netns, outer, inner = f"aat{self.tag}{name}", f"aath{self.tag}{i}", f"aatn{self.tag}{i}"
                address = f"{self.subnet}.{10 + i}"
                sh("ip", "netns", "add", netns)
                self.hosts[name] = Host(name, netns, address)
                sh("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
                self.links.append(outer)
                sh("ip", "link", "set", inner, "netns", netns)
                sh("ip", "link", "set", outer, "master", self.bridge)
                sh("ip", "link", "set", outer, "up")
                for args in (("addr", "add", f"{address}/24", "dev", inner),
                             ("link", "set", inner, "up"), ("link", "set", "lo", "up")):
                    sh("ip", "netns", "exec", netns, "ip", *args)
        except Exception:
            self.close()
            raise

    def close(self) -> None:
        for host in self.hosts.values():
            with contextlib.suppress(RuntimeError):
                host.signal_all(signal.SIGKILL)
            for proc in host.procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=10)
            subprocess.run(["ip", "netns", "del", host.netns], capture_output=True, timeout=30)
        # the kernel may reap a deleted namespace (and its veth end) later: remove the pairs now
        for link in self.links:
            subprocess.run(["ip", "link", "del", link], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, timeout=30)


class Forward:
    """Accept on ``(host, port)`` and relay each connection to ``127.0.0.1:target``."""

    def __init__(self, host: str, target: int) -> None:
        self.target = target
        self.sources: Counter[str] = Counter()  # client address -> connections
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, (addr, _) = self.sock.accept()
            except OSError:
                return
            self.sources[addr] += 1
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: Any, dst: Any) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._stop = True
        self.sock.close()
