"""The drills' cut-able proxy must not hold on to connections that ended: it lives in the test's process,
and a descriptor leak there once stalled every new MQTT connection of the soak (RELIABILITY.md)."""

from __future__ import annotations

import os
import socket
import threading
import time

from tests.support.tcpproxy import TcpProxy


def _echo_server() -> tuple[socket.socket, int]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                while data := conn.recv(1024):
                    conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    return server, server.getsockname()[1]


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_connections_that_ended_give_their_descriptors_back():
    server, port = _echo_server()
    proxy = TcpProxy("127.0.0.1", port).start()
    try:
        with socket.create_connection(("127.0.0.1", proxy.port)) as warm:  # threads and imports settle
            warm.sendall(b"x")
            assert warm.recv(1) == b"x"
        time.sleep(0.2)
        before = _open_descriptors()
        for i in range(50):
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as c:
                c.sendall(b"ping %d" % i)
                assert c.recv(64) == b"ping %d" % i
        deadline = time.monotonic() + 5
        while (proxy._conns or _open_descriptors() > before + 2) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proxy._conns == []
        # 50 connections through the proxy: two sockets each on its side; before the fix all 100 stayed open
        assert _open_descriptors() <= before + 2
    finally:
        proxy.stop()
        server.close()


def test_a_cut_still_drops_open_connections():
    server, port = _echo_server()
    proxy = TcpProxy("127.0.0.1", port).start()
    try:
        c = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        c.sendall(b"a")
        assert c.recv(1) == b"a"
        proxy.cut()
        assert c.recv(1) == b""  # the proxy closed its side
        c.close()
        proxy.restore()
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as again:
            again.sendall(b"b")
            assert again.recv(1) == b"b"
    finally:
        proxy.stop()
        server.close()
