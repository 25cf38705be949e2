"""HTTPS test apps on the standard library (ssl over OpenSSL).

    python tls_apps.py server CERT KEY [PORT]
        The stdlib test server (stdlib_server.Handler, every route of it)
        behind TLS: ThreadingHTTPServer with its listening socket wrapped.
    python tls_apps.py frontend BACKEND_URL CA CERT KEY [PORT]
        HTTPS frontend: GET /checkout/<id> calls the HTTPS backend twice on
        the serving thread -- GET /users/<id> through a keep-alive
        `requests.Session` (urllib3), then POST /users through a fresh
        `http.client.HTTPSConnection` -- and answers 200 with both statuses.

Both print "READY <port>" once listening. Certificates are the caller's
(the tests make a CA and a server certificate for localhost).
"""
import http.client
import json
import ssl
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

from stdlib_server import Handler


def serve(handler, cert, key, port):
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    print("READY", server.server_address[1], flush=True)
    server.serve_forever()


def frontend(backend, ca, cert, key, port):
    local = threading.local()
    parsed = urllib.parse.urlsplit(backend)
    client_context = ssl.create_default_context(cafile=ca)

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
                body, status = b'{"error":"not found"}', 404
            else:
                # verify= on the request: REQUESTS_CA_BUNDLE would override the session's.
                user = session().get(f"{backend}/users/{parts[1]}", timeout=10, verify=ca)
                connection = http.client.HTTPSConnection(
                    parsed.hostname, parsed.port, context=client_context, timeout=10
                )
                connection.request("POST", "/users", body=b"order-for-" + parts[1].encode())
                order = connection.getresponse()
                order.read()
                connection.close()
                body = json.dumps({"user": user.status_code, "order": order.status}).encode()
                status = 200
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    serve(Frontend, cert, key, port)


def main():
    mode = sys.argv[1]
    if mode == "server":
        cert, key = sys.argv[2:4]
        port = int(sys.argv[4]) if len(sys.argv) > 4 else 0
        serve(Handler, cert, key, port)
    elif mode == "frontend":
        backend, ca, cert, key = sys.argv[2:6]
        port = int(sys.argv[6]) if len(sys.argv) > 6 else 0
        frontend(backend.rstrip("/"), ca, cert, key, port)
    else:
        sys.exit(f"unknown mode {mode!r}: server or frontend")


if __name__ == "__main__":
    main()
