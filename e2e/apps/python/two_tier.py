"""The two-tier app: a frontend that calls a backend with `requests`.

    python two_tier.py BACKEND_URL [PORT]

GET /checkout/<id> on the frontend makes two backend calls on the serving
thread (GET /users/<id>, then POST /users) through one keep-alive
`requests.Session` per thread, and answers 200 with what it got.
Prints "READY <port>" once listening.
"""
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

BACKEND = sys.argv[1].rstrip("/")
local = threading.local()


def session():
    if not hasattr(local, "session"):
        local.session = requests.Session()
    return local.session


class Frontend(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        parts = self.path.split("?", 1)[0].strip("/").split("/")
        if len(parts) != 2 or parts[0] != "checkout":
            body = b'{"error":"not found"}'
            status = 404
        else:
            user = session().get(f"{BACKEND}/users/{parts[1]}", timeout=10)
            order = session().post(f"{BACKEND}/users", data=b"order-for-" + parts[1].encode(), timeout=10)
            body = json.dumps({"user": user.status_code, "order": order.status_code}).encode()
            status = 200
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main():
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    server = ThreadingHTTPServer(("127.0.0.1", port), Frontend)
    server.daemon_threads = True
    print("READY", server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
