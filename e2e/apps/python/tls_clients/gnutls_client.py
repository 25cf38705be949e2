"""HTTPS GETs through libcurl built on GnuTLS: a Python process doing TLS
without OpenSSL, which the probe cannot trace and must say so.

    python gnutls_client.py URL_BASE CA N

Loads libcurl-gnutls (Debian's libcurl3-gnutls, which git depends on),
prints "LOADED", waits for a line on stdin (the test starts the probe
meanwhile), sends N requests GET URL_BASE/users/<i> and prints
"STATUS <status> ...".
"""
import ctypes
import sys

CURLOPT_URL = 10002
CURLOPT_CAINFO = 10065
CURLOPT_WRITEFUNCTION = 20011
CURLINFO_RESPONSE_CODE = 0x200002
CURL_GLOBAL_DEFAULT = 3

base, ca, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
curl = ctypes.CDLL("libcurl-gnutls.so.4")
curl.curl_easy_init.restype = ctypes.c_void_p
curl.curl_easy_setopt.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
curl.curl_easy_perform.argtypes = [ctypes.c_void_p]
curl.curl_easy_getinfo.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
curl.curl_easy_cleanup.argtypes = [ctypes.c_void_p]
WRITE = ctypes.CFUNCTYPE(ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_void_p)
discard = WRITE(lambda data, size, count, user: size * count)
curl.curl_global_init(CURL_GLOBAL_DEFAULT)
print("LOADED", flush=True)
sys.stdin.readline()
statuses = []
for i in range(n):
    handle = curl.curl_easy_init()
    url = ctypes.c_char_p(f"{base}/users/{i}".encode())
    cainfo = ctypes.c_char_p(ca.encode())
    curl.curl_easy_setopt(handle, CURLOPT_URL, url)
    curl.curl_easy_setopt(handle, CURLOPT_CAINFO, cainfo)
    curl.curl_easy_setopt(handle, CURLOPT_WRITEFUNCTION, ctypes.cast(discard, ctypes.c_void_p))
    result = curl.curl_easy_perform(handle)
    code = ctypes.c_long(0)
    curl.curl_easy_getinfo(handle, CURLINFO_RESPONSE_CODE, ctypes.byref(code))
    statuses.append(code.value if result == 0 else -result)
    curl.curl_easy_cleanup(handle)
print("STATUS", *statuses, flush=True)
