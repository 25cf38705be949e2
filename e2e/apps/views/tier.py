"""The apps of the views test, standard library only.

As a tier of the service graph: `GET /<anything>/<id>` answers 200 after
`--work-ms`; with `--downstream URL` it first calls `GET URL/<id>` and
answers 502 if that failed. A path ending in `/fail` fails on purpose: 500
at the last tier, and the suffix is passed downstream.

As the pod of the resources ground truth:
`GET /work?cpu_ms=&disk_bytes=&net_bytes=&sink=ip:port&refused=ip:port&refusals=`
burns at least `cpu_ms` of its own CPU time, writes `disk_bytes` to a file
in `--dir` (fsync'ed, then removed), sends `net_bytes` to `sink` over TCP,
and tries `refusals` connects to `refused` (a closed port). It answers with
what it measured itself: its CPU time spent handling the request
(`time.process_time()`), the bytes written and the bytes sent.

Run:
    python3 tier.py --listen 0.0.0.0:8080 [--downstream http://10.200.0.3:8080/api] [--work-ms 30] [--dir /scratch]
"""

import argparse
import http.client
import json
import os
import socket
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


def addr(text):
    host, port = text.rsplit(":", 1)
    return host, int(port)


def work(query, directory):
    """Does what `/work` asks; returns what it measured, as JSON."""
    q = {k: v[0] for k, v in parse_qs(query).items()}
    start = time.process_time()
    spin_until = start + int(q.get("cpu_ms", "0")) / 1000.0
    x = 0
    while time.process_time() < spin_until:
        x += 1
    written = 0
    disk_bytes = int(q.get("disk_bytes", "0"))
    if disk_bytes:
        path = os.path.join(directory, f"work-{os.getpid()}")
        chunk = os.urandom(1 << 20)
        with open(path, "wb") as f:
            while written < disk_bytes:
                n = min(len(chunk), disk_bytes - written)
                f.write(chunk[:n])
                written += n
            f.flush()
            os.fsync(f.fileno())
        os.remove(path)
    sent = 0
    net_bytes = int(q.get("net_bytes", "0"))
    if net_bytes:
        with socket.create_connection(addr(q["sink"]), timeout=30) as s:
            block = b"x" * (1 << 16)
            while sent < net_bytes:
                n = s.send(block[: min(len(block), net_bytes - sent)])
                sent += n
            s.shutdown(socket.SHUT_WR)
            while s.recv(1 << 16):
                pass
    refused = 0
    for _ in range(int(q.get("refusals", "0"))):
        try:
            socket.create_connection(addr(q["refused"]), timeout=5).close()
        except ConnectionRefusedError:
            refused += 1
    cpu = time.process_time() - start
    return json.dumps(
        {"cpu_seconds": cpu, "disk_bytes": written, "net_bytes": sent, "refused": refused}
    ).encode()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", default="0.0.0.0:8080")
    parser.add_argument("--downstream")
    parser.add_argument("--work-ms", type=float, default=0.0)
    parser.add_argument("--dir", help="where /work writes")
    args = parser.parse_args()
    down = urlparse(args.downstream) if args.downstream else None

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Without it every response waits for the client's delayed ACK (~40 ms).
        disable_nagle_algorithm = True

        def do_GET(self):
            if self.path == "/healthz":
                return self.reply(200, b"ok\n")
            url = urlparse(self.path)
            if url.path == "/work" and args.dir:
                return self.reply(200, work(url.query, args.dir), "application/json")
            parts = [p for p in self.path.split("/") if p]
            fail = parts[-1:] == ["fail"]
            ident = parts[-2] if fail and len(parts) >= 2 else (parts[-1] if parts else "0")
            if down is not None:
                conn = http.client.HTTPConnection(down.hostname, down.port or 80, timeout=10)
                try:
                    conn.request("GET", f"{down.path}/{ident}" + ("/fail" if fail else ""))
                    status = conn.getresponse().status
                except OSError:
                    status = 0
                finally:
                    conn.close()
                if status != 200:
                    return self.reply(502, b"downstream failed\n")
            if args.work_ms:
                time.sleep(args.work_ms / 1000.0)
            if fail and down is None:
                return self.reply(500, b"failed on purpose\n")
            self.reply(200, f"item {ident}\n".encode())

        def reply(self, code, body, content_type="text/plain"):
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    host, port = args.listen.rsplit(":", 1)
    server = ThreadingHTTPServer((host, int(port)), Handler)
    server.daemon_threads = True
    print(f"tier listening on {args.listen}, downstream {args.downstream}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
