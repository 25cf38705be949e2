"""The pod of the resources ground-truth test: standard library only.

`GET /work?cpu_ms=&disk_bytes=&net_bytes=&sink=ip:port&refused=ip:port&refusals=`
burns at least `cpu_ms` of its own CPU time, writes `disk_bytes` to a file
in `--dir` (fsync'ed, then removed), sends `net_bytes` to `sink` over TCP,
and tries `refusals` connects to `refused` (a closed port). It answers with
what it measured itself: its CPU time spent handling the request
(`time.process_time()`), the bytes written and the bytes sent. Run:
    python3 worker.py --listen 0.0.0.0:8080 --dir /tmp/x
"""

import argparse
import json
import os
import socket
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlparse


def addr(text):
    host, port = text.rsplit(":", 1)
    return host, int(port)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", default="0.0.0.0:8080")
    parser.add_argument("--dir", required=True)
    args = parser.parse_args()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def do_GET(self):
            url = urlparse(self.path)
            if url.path == "/healthz":
                return self.reply(200, b"ok\n")
            q = {k: v[0] for k, v in parse_qs(url.query).items()}
            start = time.process_time()
            spin_until = start + int(q.get("cpu_ms", "0")) / 1000.0
            x = 0
            while time.process_time() < spin_until:
                x += 1
            written = 0
            disk_bytes = int(q.get("disk_bytes", "0"))
            if disk_bytes:
                path = os.path.join(args.dir, f"work-{os.getpid()}")
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
            body = json.dumps(
                {"cpu_seconds": cpu, "disk_bytes": written, "net_bytes": sent, "refused": refused}
            ).encode()
            self.reply(200, body)

        def reply(self, code, body):
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    host, port = args.listen.rsplit(":", 1)
    server = HTTPServer((host, int(port)), Handler)
    print(f"worker listening on {args.listen}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
