"""OpenSSL calls in a loop, without sockets: the cost of one SSL_write_ex
plus one SSL_read_ex, which is what a uprobe on libssl adds to a process.

    python ssl_loop.py CERT KEY WINDOWS

A client and a server SSL object over memory BIOs in one process (the
handshake once), then 64-byte records written by one and read by the other.
Prints "PID <pid>", waits for a line on stdin (so that a probe can be
attached to it, or elsewhere, first), then times WINDOWS windows of 20,000
pairs and prints the nanoseconds per write+read pair of each.
"""
import os
import ssl
import sys
import time

cert, key, windows = sys.argv[1], sys.argv[2], int(sys.argv[3])
server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
server_ctx.load_cert_chain(cert, key)
client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
client_ctx.check_hostname = False
client_ctx.verify_mode = ssl.CERT_NONE
c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
client = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost")
server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
for _ in range(10):
    for side in (client, server):
        try:
            side.do_handshake()
        except ssl.SSLWantReadError:
            pass
    s_in.write(c_out.read())
    c_in.write(s_out.read())
print("PID", os.getpid(), flush=True)
sys.stdin.readline()
payload = b"x" * 64
for _ in range(windows):
    start = time.perf_counter_ns()
    for _ in range(20000):
        client.write(payload)
        s_in.write(c_out.read())
        server.read(64)
    print((time.perf_counter_ns() - start) / 20000, flush=True)
