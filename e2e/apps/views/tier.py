"""One Python tier of the service-graph test: standard library only.

`GET /<anything>/<id>` answers 200 after `--work-ms`; with `--downstream URL`
it first calls `GET URL/<id>` and answers 502 if that failed. A path ending
in `/fail` fails on purpose: 500 at the last tier, and the suffix is passed
downstream. Run:
    python3 tier.py --listen 0.0.0.0:8080 [--downstream http://10.200.0.3:8080/api] [--work-ms 30]
"""

import argparse
import http.client
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", default="0.0.0.0:8080")
    parser.add_argument("--downstream")
    parser.add_argument("--work-ms", type=float, default=0.0)
    args = parser.parse_args()
    down = urlparse(args.downstream) if args.downstream else None

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Without it every response waits for the client's delayed ACK (~40 ms).
        disable_nagle_algorithm = True

        def do_GET(self):
            if self.path == "/healthz":
                return self.reply(200, b"ok\n")
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

        def reply(self, code, body):
            self.send_response(code)
            self.send_header("Content-Type", "text/plain")
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
