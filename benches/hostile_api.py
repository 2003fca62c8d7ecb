#!/usr/bin/env python3
"""A hostile heartbeat server for measuring the client's memory (issue 21):
`/list` and `/status` answer one app, and `/api/v1/apps` answers, whatever
the query, one document of SIZE_MB megabytes of tiny JSON values
(`{"version":1,"apps":[0,0,0,...]}`), the shape that costs a parser that
builds a generic value tree the most per byte.

    python3 benches/hostile_api.py PORT SIZE_MB &
    /usr/bin/time -v heartbeat --url http://127.0.0.1:PORT check --all

BENCHMARKS.md has the peak RSS before and after paging and the typed parse.
"""
import socket
import sys
import threading

PORT = int(sys.argv[1])
SIZE = int(sys.argv[2]) * 1_000_000
HEAD = b'{"version":1,"apps":['
TAIL = b"0]}"
CHUNK = b"0," * 32768


def reply(conn, body_iter, length):
    conn.sendall(
        b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
        + str(length).encode()
        + b"\r\n\r\n"
    )
    for part in body_iter:
        conn.sendall(part)


def api_body():
    yield HEAD
    left = SIZE - len(HEAD) - len(TAIL)
    while left > 0:
        part = CHUNK[: min(len(CHUNK), left)]
        left -= len(part)
        yield part
    yield TAIL


def serve(conn):
    try:
        data = b""
        while b"\r\n\r\n" not in data:
            more = conn.recv(4096)
            if not more:
                return
            data += more
        path = data.split(b" ", 2)[1]
        if path.startswith(b"/api/v1/apps"):
            reply(conn, api_body(), SIZE)
        elif path.startswith(b"/list"):
            body = b"a @ 127.0.0.1\n"
            reply(conn, [body], len(body))
        else:
            body = b"OK - fine application [a]| od=0.10;3;5;0;6 delay=3000ms;;; "
            reply(conn, [body], len(body))
    except OSError:
        pass
    finally:
        conn.close()


listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", PORT))
listener.listen(64)
while True:
    conn, _ = listener.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
