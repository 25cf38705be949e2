"""The realistic handler both benchmark apps serve: a call to a backend
over a keep-alive connection, JSON encoding and decoding, a Jinja2
template — about 0.2–1 ms of work on a service like the ones we trace.

    BENCH_BACKEND=http://127.0.0.1:PORT   the backend (answers GET /users/<id> with JSON)
"""
import json
import os
import threading

import jinja2
import requests

BACKEND = os.environ.get("BENCH_BACKEND", "").rstrip("/")

TEMPLATE = jinja2.Environment(autoescape=True).from_string(
    """<html><body><h1>Order {{ ident }} for {{ user.name }}</h1>
<table>{% for item in items %}
<tr><td>{{ item.sku }}</td><td>{{ item.qty }}</td><td>{{ "%.2f"|format(item.price) }}</td></tr>{% endfor %}
</table><p>Total: {{ "%.2f"|format(total) }}</p></body></html>"""
)

_local = threading.local()


def _session() -> requests.Session:
    # One keep-alive connection per thread, as a service with a client pool has.
    if not hasattr(_local, "session"):
        _local.session = requests.Session()
    return _local.session


def order(ident: str) -> dict:
    response = _session().get(f"{BACKEND}/users/{ident}", timeout=10)
    response.raise_for_status()
    user = response.json()
    items = [{"sku": f"sku-{ident}-{i}", "qty": i % 3 + 1, "price": 3.5 + i * 1.25} for i in range(40)]
    decoded = json.loads(json.dumps({"user": user, "items": items}))
    total = sum(item["qty"] * item["price"] for item in decoded["items"])
    page = TEMPLATE.render(ident=ident, user=user, items=decoded["items"], total=total)
    return {"user": user["name"], "total": round(total, 2), "page_bytes": len(page)}
