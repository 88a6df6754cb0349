#!/usr/bin/env python3
"""Time to a response head for clients with Nagle's algorithm on (no TCP_NODELAY) that write a
request in pieces: such a client holds its next small write until the last one is acknowledged,
so a proxy that holds back its ACKs (lariat and HAProxy both do, for new connections) must send
one when the request has not all arrived, or the client waits for the delayed-ACK timer (40 ms).

    python3 bench/split_writes.py PORT      # an HTTP entrypoint on 127.0.0.1:PORT
"""
import socket
import sys
import time

port = int(sys.argv[1])


def run(parts):
    s = socket.create_connection(("127.0.0.1", port))  # Nagle on: no TCP_NODELAY
    t = time.perf_counter()
    for p in parts:
        s.send(p)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    dt = (time.perf_counter() - t) * 1000
    s.close()
    return dt, data.split(b"\r\n")[0].decode()


cases = {
    "GET, one write": [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"],
    "POST, head then body": [b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n", b"hello"],
    "GET, head in two writes": [b"GET / HTTP/1.1\r\n", b"Host: x\r\n\r\n"],
    "POST, head in two writes, then body": [b"POST / HTTP/1.1\r\n", b"Host: x\r\nContent-Length: 5\r\n\r\n", b"hello"],
}
for name, parts in cases.items():
    ts = [run(parts) for _ in range(5)]
    print(f"{name:40s} ms: {' '.join(f'{t:.1f}' for t, _ in ts)}  {ts[0][1]}")
