"""A TCP proxy a test can cut, stall and restore: a real server (PostgreSQL, Mosquitto) made unreachable
on demand, without disturbing anything else on the machine that uses it.

``cut`` is what a restart or a pulled cable with a reset looks like from the client's side: open
connections drop and new ones are refused. ``stall`` is the nastier case, a link that goes silent:
connections stay open and new ones are accepted, but no byte crosses until ``resume`` (or ``cut``),
so the client must notice by its own keep-alive.
"""

from __future__ import annotations

import contextlib
import socket
import threading

from tests.support.broker import free_port


class TcpProxy:
    def __init__(self, upstream_host: str, upstream_port: int, port: int | None = None) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = port or free_port()
        self.cuts = 0
        self.stalls = 0
        self._server: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._flowing = threading.Event()
        self._flowing.set()

    def start(self) -> TcpProxy:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(64)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()
        return self

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            pumps_left = [2]  # the second pump to finish closes the pair
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b, pumps_left), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, pumps_left: list[int]) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                self._flowing.wait()  # a stalled link holds what it read; nothing crosses
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        # Close (not only shut down) once both directions are done. A shut-down socket still holds its
        # descriptor: the soak's proxy, living in the test's process, leaked two per connection until the
        # process passed 1,023 descriptors, and from then on every new MQTT connection in that process got
        # a descriptor select() cannot take, so paho dropped it as "connection lost" right after CONNECT
        # (the "reconnect stall" of RELIABILITY.md).
        with self._lock:
            pumps_left[0] -= 1
            if pumps_left[0] > 0:
                return
            for s in (src, dst):
                if s in self._conns:
                    self._conns.remove(s)
        for s in (src, dst):
            s.close()

    def cut(self) -> None:
        """Drop every connection and refuse new ones."""
        self.cuts += 1
        if self._server is not None:
            with contextlib.suppress(OSError):  # wakes the thread blocked in accept() (Linux)
                self._server.shutdown(socket.SHUT_RDWR)
            self._server.close()
            self._server = None
        with self._lock:
            for s in self._conns:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            self._conns.clear()
        self._flowing.set()  # let the pumps of the dropped connections see their sockets closed

    def restore(self) -> None:
        self.start()

    def stall(self) -> None:
        """Keep every connection open but let nothing through (a silent link)."""
        self.stalls += 1
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def stop(self) -> None:
        self.cut()
