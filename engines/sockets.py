"""Which socket is this thread's request using? So cancel and deadlines can wake a blocked read.

httpx (sync) sends a request on the caller's thread, so the network stream that last *wrote*
on a thread is the one serving that thread's request, for new and pooled connections alike. A
thin wrapper around httpcore's network backend records it; ``shutdown_for(thread_id)`` then
shuts that socket down, which makes the blocked read return at once (closing a socket from
another thread does not reliably wake a read; ``shutdown`` does).
"""
from __future__ import annotations

import socket
import threading
from typing import Any

import httpcore
import httpx


class _TrackingStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream, streams: dict[int, Any]):
        self._inner = inner
        self._streams = streams

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._streams[threading.get_ident()] = self._inner
        self._inner.write(buffer, timeout)

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context, server_hostname=None, timeout=None):
        return _TrackingStream(self._inner.start_tls(ssl_context, server_hostname, timeout),
                               self._streams)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _TrackingBackend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend, streams: dict[int, Any]):
        self._inner = inner
        self._streams = streams

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        stream = self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        self._streams[threading.get_ident()] = stream
        return _TrackingStream(stream, self._streams)

    def connect_unix_socket(self, path, timeout=None, socket_options=None):
        return _TrackingStream(self._inner.connect_unix_socket(path, timeout, socket_options),
                               self._streams)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class SocketTracker:
    """Installs itself on an httpx.Client's connection pool."""

    def __init__(self, client: httpx.Client):
        self._streams: dict[int, Any] = {}
        transport = getattr(client, "_transport", None)
        transport = getattr(transport, "inner", transport)  # under engines.network_guard's
        pool = getattr(transport, "_pool", None)
        backend = getattr(pool, "_network_backend", None)
        self.installed = pool is not None and backend is not None
        if pool is not None and backend is not None:  # httpcore 1.x keeps its backend here
            pool._network_backend = _TrackingBackend(backend, self._streams)

    def forget(self, thread_id: int) -> None:
        self._streams.pop(thread_id, None)

    def shutdown_for(self, thread_id: int) -> bool:
        stream = self._streams.get(thread_id)
        if stream is not None and any(other is stream for tid, other in
                                      list(self._streams.items()) if tid != thread_id):
            return False  # back in the pool and taken by another thread's request: ours is over
        sock = stream.get_extra_info("socket") if stream is not None else None
        if sock is None:
            return False
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        return True
