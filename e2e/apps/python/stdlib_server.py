"""The test app on the standard library: ThreadingHTTPServer, HTTP/1.1 keep-alive.

    python stdlib_server.py [PORT]     (0 or absent: an ephemeral port)

Prints "READY <port>" on stdout once listening. Routes (the Flask and
FastAPI variants serve the same ones):
    GET  /health                 200
    GET  /hello                  200, text body
    GET  /users/<id>             200, JSON body
    HEAD /users/<id>             200, no body
    POST /users                  201, echoes the body length
    PUT  /users/<id>             200
    DELETE /users/<id>           204
    GET  /redirect/<id>          302 -> /users/<id>
    GET  /missing/<id>           404
    GET  /fail/<id>              500
    GET  /stream/<id>            200, chunked body
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Without it every response waits for the client's delayed ACK (~40 ms).
    disable_nagle_algorithm = True

    def log_message(self, format, *args):
        pass

    def _send(self, status, body=b"", content_type="application/json", headers=()):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        if status not in (204, 304):
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _parts(self):
        return self.path.split("?", 1)[0].strip("/").split("/")

    def do_GET(self):
        parts = self._parts()
        if parts == ["health"]:
            return self._send(200, b'{"ok":true}')
        if parts == ["hello"]:
            return self._send(200, b"hello\n", content_type="text/plain")
        if len(parts) == 2:
            kind, ident = parts
            if kind == "users":
                return self._send(200, json.dumps({"id": ident, "name": "user" + ident}).encode())
            if kind == "redirect":
                return self._send(302, b"", headers=[("Location", "/users/" + ident)])
            if kind == "fail":
                return self._send(500, b'{"error":"boom"}')
            if kind == "stream":
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for piece in (b"alpha-", b"beta-", b"gamma"):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.write(b"0\r\n\r\n")
                return
        return self._send(404, b'{"error":"not found"}')

    def do_HEAD(self):
        self.do_GET()

    def do_POST(self):
        body = self._body()
        if self._parts() == ["users"]:
            return self._send(201, json.dumps({"received": len(body)}).encode())
        return self._send(404, b'{"error":"not found"}')

    def do_PUT(self):
        body = self._body()
        parts = self._parts()
        if len(parts) == 2 and parts[0] == "users":
            return self._send(200, json.dumps({"updated": parts[1], "received": len(body)}).encode())
        return self._send(404, b'{"error":"not found"}')

    def do_DELETE(self):
        parts = self._parts()
        if len(parts) == 2 and parts[0] == "users":
            return self._send(204)
        return self._send(404, b'{"error":"not found"}')


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print("READY", server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
