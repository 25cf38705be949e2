"""The demo's Python service: a storefront that calls the Go backend.

Standard library only. `GET /shop/<id>` fetches `/api/items/<id>` from the
backend and wraps it; a backend error becomes a 502. Run:
    python3 frontend.py --listen 0.0.0.0:8000 --backend http://10.200.0.2:8080
"""

import argparse
import http.client
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", default="0.0.0.0:8000")
    parser.add_argument("--backend", required=True)
    args = parser.parse_args()
    backend = urlparse(args.backend)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Without it every response waits for the client's delayed ACK (~40 ms).
        disable_nagle_algorithm = True

        def do_GET(self):
            if self.path == "/healthz":
                return self.reply(200, b"ok\n", "text/plain")
            if not self.path.startswith("/shop/"):
                return self.reply(404, b"not found\n", "text/plain")
            item = self.path[len("/shop/"):]
            conn = http.client.HTTPConnection(backend.hostname, backend.port or 80, timeout=5)
            try:
                conn.request("GET", f"/api/items/{item}")
                resp = conn.getresponse()
                body = resp.read()
            except OSError as err:
                return self.reply(502, f"backend unreachable: {err}\n".encode(), "text/plain")
            finally:
                conn.close()
            if resp.status != 200:
                return self.reply(502, b"backend error\n", "text/plain")
            page = {"item": json.loads(body), "served_by": "frontend"}
            self.reply(200, json.dumps(page).encode(), "application/json")

        def reply(self, code, body, content_type):
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
    print(f"frontend listening on {args.listen}, backend {args.backend}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
