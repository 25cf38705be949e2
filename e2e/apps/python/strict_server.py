"""A strict HTTP/1.1 server: refuses any request it would not expect.

    python strict_server.py

Parses with h11 (strict framing, CRLF line ends, one Content-Length), and
answers 400 to a request that carries a header outside a short allow-list,
or a trace-context header twice; anything else gets 200 (201 for POST)
with an empty JSON body. Prints "READY <port>" once listening, then
"SAW <traceparent or -> <segments or ->" for every request it accepted:
<segments> is how many TCP data segments a GET's head arrived in (from
the socket's TCP_INFO), "-" for a request with a body. Used to show that
the headers the probe writes into requests keep them valid for a server
that rejects what it does not know, and that they travel in the head's
own segment: a server that parses the first read sees them.
"""
import socket
import struct
import sys
import threading

import h11

ALLOWED = {
    b"host",
    b"user-agent",
    b"accept",
    b"accept-encoding",
    b"connection",
    b"content-length",
    b"content-type",
    b"expect",
    b"traceparent",
    b"tracestate",
    b"baggage",
}
ONCE = {b"traceparent", b"tracestate", b"baggage"}
lock = threading.Lock()


def refusal(headers):
    seen = set()
    for name, _ in headers:
        if name not in ALLOWED:
            return f"unknown header {name.decode()!r}"
        if name in ONCE and name in seen:
            return f"header {name.decode()!r} sent twice"
        seen.add(name)
    return None


# struct tcp_info (linux/tcp.h): tcpi_data_segs_in, segments that carried
# data, at this offset since Linux 4.6.
DATA_SEGS_IN = 152


def data_segments_in(sock):
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, DATA_SEGS_IN + 4)
    return struct.unpack_from("I", info, DATA_SEGS_IN)[0]


def reply(conn, sock, status, body):
    data = conn.send(
        h11.Response(
            status_code=status,
            headers=[("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
        )
    )
    data += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
    sock.sendall(data)


def serve(sock):
    conn = h11.Connection(h11.SERVER)
    # Data segments received before the current request: the client sends
    # a request only once it has the answer to the one before.
    before = 0
    with sock:
        while True:
            try:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = sock.recv(65536)
                    conn.receive_data(data)
                    if not data:
                        return
                    continue
                if isinstance(event, h11.ConnectionClosed):
                    return
                if not isinstance(event, h11.Request):
                    continue
                request = event
                # A GET is its head alone: every segment since the last
                # answer carried part of it.
                segments = str(data_segments_in(sock) - before) if request.method == b"GET" else "-"
                while not isinstance(event, h11.EndOfMessage):
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        conn.receive_data(sock.recv(65536))
                why = refusal(request.headers)
                if why:
                    reply(conn, sock, 400, f'{{"error":"{why}"}}'.encode())
                    return
                traceparent = dict(request.headers).get(b"traceparent", b"-").decode()
                with lock:
                    print("SAW", traceparent, segments, flush=True)
                before = data_segments_in(sock)
                reply(conn, sock, 201 if request.method == b"POST" else 200, b"{}")
                conn.start_next_cycle()
            except h11.RemoteProtocolError as err:
                # A malformed request: say so, as a strict server does.
                with lock:
                    print("MALFORMED", err, flush=True)
                try:
                    sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                except OSError:
                    pass
                return


def main():
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    print("READY", listener.getsockname()[1], flush=True)
    while True:
        sock, _ = listener.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=serve, args=(sock,), daemon=True).start()


if __name__ == "__main__":
    main()
