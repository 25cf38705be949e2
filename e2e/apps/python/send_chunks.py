"""A client that sends exactly the bytes it is told, one send() per chunk.

    python send_chunks.py

Reads one case per line on stdin: "<port> <hex chunk> <hex chunk> ...".
For each, connects to 127.0.0.1:<port>, sends every chunk with its own
send() call (TCP_NODELAY: no coalescing in the process), closes, and prints "OK <n> <n> ..." with what each send()
call took (a full socket buffer may split a chunk), or "ERR <reason>". Prints "READY"
once started. Used to test that rewriting requests on the way out never
corrupts them, whatever their shape and however they are cut into sends.
"""
import socket
import sys


class StepError(Exception):
    pass


def step(what, call, *args):
    try:
        return call(*args)
    except OSError as err:
        raise StepError(f"{what}: {err}") from err


def send_case(port, chunks):
    sends = []
    with step("connect", socket.create_connection, ("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                sent = step(f"send #{len(sends)} of {len(view)} bytes", sock.send, view)
                sends.append(sent)
                view = view[sent:]
    # Closed without reading: a blocking recv() on a socket in a sockhash
    # can fail with EAGAIN on a wake-up without data (docs/propagation.md).
    return sends


def main():
    print("READY", flush=True)
    for line in sys.stdin:
        fields = line.split()
        if not fields:
            continue
        try:
            sends = send_case(int(fields[0]), [bytes.fromhex(h) for h in fields[1:]])
            print("OK", *sends, flush=True)
        except StepError as err:
            print("ERR", err, flush=True)


if __name__ == "__main__":
    main()
