"""HTTPS GETs through ftstatictls.c (OpenSSL linked in statically).

    python static_client.py LIBRARY HOST PORT CA N

Loads LIBRARY, prints "LOADED", waits for a line on stdin (the test starts
the probe meanwhile), sends N requests GET /users/<i> and prints
"STATUS <status> ..." for them.
"""
import ctypes
import sys

library, host, port, ca, n = sys.argv[1:6]
tls = ctypes.CDLL(library)
tls.ft_https_get.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p]
tls.ft_https_get.restype = ctypes.c_int
print("LOADED", flush=True)
sys.stdin.readline()
statuses = [
    tls.ft_https_get(host.encode(), int(port), f"/users/{i}".encode(), ca.encode())
    for i in range(int(n))
]
print("STATUS", *statuses, flush=True)
