"""HTTPS requests from a child forked after the probe claimed its parent.

    python fork_client.py HOST PORT CA N

Imports ssl (so the parent maps libssl), prints "LOADED", waits for a line on
stdin (the test starts the probe meanwhile), then forks. The child prints
"CHILD <pid>", waits for another line on stdin (the test sends it once the
probe has attached to the child: no fixed delay can know how long that takes
on a loaded machine), sends N requests GET /users/<i> with http.client, one
connection each, prints "STATUS <status> ..." and exits; the parent waits
for it.
"""
import http.client
import os
import ssl
import sys

host, port, ca, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
context = ssl.create_default_context(cafile=ca)
print("LOADED", flush=True)
sys.stdin.readline()
child = os.fork()
if child == 0:
    print("CHILD", os.getpid(), flush=True)
    sys.stdin.readline()
    statuses = []
    for i in range(n):
        connection = http.client.HTTPSConnection(host, port, context=context, timeout=10)
        connection.request("GET", f"/users/{i}")
        response = connection.getresponse()
        response.read()
        statuses.append(response.status)
        connection.close()
    print("STATUS", *statuses, flush=True)
    os._exit(0)
os.waitpid(child, 0)
