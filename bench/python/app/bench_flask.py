"""Flask benchmark app (run by gunicorn): the minimal handler the tests use
and the realistic one (app/work.py)."""
from flask import Flask, jsonify

import work

app = Flask(__name__)


@app.get("/users/<ident>")
def get_user(ident):
    return jsonify(id=ident, name="user" + ident)


@app.get("/orders/<ident>")
def get_order(ident):
    return jsonify(work.order(ident))
