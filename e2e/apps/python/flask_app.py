"""The test app on Flask (served by gunicorn's threaded worker, or Flask's own server).

    gunicorn -k gthread --threads 8 -b 127.0.0.1:PORT flask_app:app
    python flask_app.py PORT     (werkzeug's threaded server; used by the benchmark)

Same routes as stdlib_server.py.
"""
import sys

from flask import Flask, Response, jsonify, redirect, request

app = Flask(__name__)


@app.get("/health")
def health():
    return jsonify(ok=True)


@app.get("/hello")
def hello():
    return Response("hello\n", mimetype="text/plain")


@app.route("/users/<ident>", methods=["GET", "HEAD"])
def get_user(ident):
    return jsonify(id=ident, name="user" + ident)


@app.post("/users")
def create_user():
    return jsonify(received=len(request.get_data())), 201


@app.put("/users/<ident>")
def update_user(ident):
    return jsonify(updated=ident, received=len(request.get_data()))


@app.delete("/users/<ident>")
def delete_user(ident):
    return "", 204


@app.get("/redirect/<ident>")
def redirect_user(ident):
    return redirect("/users/" + ident, code=302)


@app.get("/missing/<ident>")
def missing(ident):
    return jsonify(error="not found"), 404


@app.get("/fail/<ident>")
def fail(ident):
    return jsonify(error="boom"), 500


@app.get("/stream/<ident>")
def stream(ident):
    def pieces():
        yield "alpha-"
        yield "beta-"
        yield "gamma"

    return Response(pieces(), mimetype="text/plain")


if __name__ == "__main__":
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 0, app, threaded=True)
    print("READY", server.server_port, flush=True)
    server.serve_forever()
