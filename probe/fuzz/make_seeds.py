#!/usr/bin/env python3
"""Writes the fuzz targets' seed inputs into probe/fuzz/seeds/<target>/.

Seeds are small, valid examples of what each parser reads in production, so
that the fuzzer starts from the interesting paths instead of discovering the
formats from nothing: an HTTP exchange, ring-buffer records laid out like
probe-ebpf's wire structs, a tiny Go-like ELF (build info, pclntab, note,
code with a stack-check prologue and RETs, DWARF naming runtime.g.goid),
/proc text as a kubelet node shows it. Re-run after changing a format; the
output is deterministic.

    python3 probe/fuzz/make_seeds.py
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
SEEDS = os.path.join(HERE, "seeds")


def write(target, name, data):
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ------------------------------------------------------------------ http1
def segments(chunks, gap=0):
    out = b""
    for c in chunks:
        out += bytes([len(c), gap]) + c
    return out


REQ = b"GET /users/42?token=abc&q=1 HTTP/1.1\r\nHost: shop:8080\r\nUser-Agent: curl/8\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\nContent-Length: 3\r\n\r\nabc"
POST_CHUNKED = b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwiki\r\n0\r\n\r\n"
RESP = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
RESP_CHUNKED = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n"
write("http1", "request", bytes([0]) + segments([REQ[:40], REQ[40:120], REQ[120:]]))
write("http1", "request_pipelined", bytes([0]) + segments([REQ + POST_CHUNKED]))
write("http1", "request_gap", bytes([0]) + segments([REQ[:30]], gap=3))
write("http1", "response", bytes([1 | (2 << 1)]) + segments([RESP, RESP_CHUNKED[:50], RESP_CHUNKED[50:]]))
write("http1", "response_head", bytes([1 | (1 << 1) | 0x10]) + segments([RESP]))

# --------------------------------------------------------- socket_tracker
def op(kind, pid=0, fd=3, extra=0):
    return bytes([(pid << 6) | (fd << 3) | kind])


def data_op(direction_egress, payload, pid=0, fd=3, tid_bit=0, gap=0):
    kind = 3 | (4 if direction_egress else 0) | tid_bit
    kind = kind & 7
    return bytes([(pid << 6) | (fd << 3) | kind, len(payload)]) + payload + bytes([gap])


server = op(0, fd=3) + bytes([0])
server += data_op(False, REQ[:200])
server += data_op(True, RESP)
server += op(1, fd=3)
write("socket_tracker", "server_exchange", server)
client = op(0, fd=4) + bytes([1])
client += data_op(True, b"GET /api HTTP/1.1\r\nHost: api\r\n\r\n", fd=4)
client += data_op(False, b"HTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\n\r\n", fd=4)
client += op(2)
write("socket_tracker", "client_exchange", client)
unknown = data_op(False, POST_CHUNKED, fd=5) + data_op(True, RESP_CHUNKED[:120], fd=5) + op(1, fd=5)
write("socket_tracker", "adopted_connection", unknown)

# ----------------------------------------------------------- ring records
# struct ft_event_header { u32 kind, tgid, tid, cpu; u64 ts_ns; } = 24 bytes
def header(kind, tgid=10, tid=11, ts=500):
    return struct.pack("<IIIIQ", kind, tgid, tid, 0, ts)


# sock data: header, u64 enter_ns, i32 fd, u32 direction, u32 total_len, u32 captured_len
def sock_data(payload, total=None):
    total = len(payload) if total is None else total
    return header(17) + struct.pack("<QiIII", 400, 7, 1, total, len(payload)) + payload


# struct ft_sock_addr { u8 addr[16]; u16 port; u16 family; }
def sock_addr(family, port, addr):
    return addr + struct.pack("<HH", port, family)


write("ring_records", "sock_data", sock_data(b"HTTP/1.1 200 OK\r\n\r\n", 9000))
write("ring_records", "sock_close", header(18) + struct.pack("<iI", 7, 0))
write("ring_records", "proc_fork", header(3) + struct.pack("<II", 1, 0) + b"python3\0".ljust(16, b"\0"))
write("ring_records", "sock_open", header(16) + struct.pack("<iI", 3, 1)
      + sock_addr(2, 8080, b"\0" * 10 + b"\xff\xff" + bytes([127, 0, 0, 1]))
      + sock_addr(10, 5555, b"\0" * 15 + b"\x01"))

# --------------------------------------------------------------- go event
# struct ft_go_request_event (448 bytes): header, start_ns @24, goid @32,
# trace @40 (40 bytes), status @80, content_length @88, five u16 lengths
# @96, then method[16] @112, path[128] @128, host[64] @256, route[64] @320,
# peer[64] @384.
def go_event(kind, method, path, route, host, peer, status):
    e = bytearray(448)
    struct.pack_into("<IIIIQ", e, 0, kind, 42, 42, 0, 2000)
    struct.pack_into("<QQ", e, 24, 1000, 7)
    e[40:56] = bytes(range(1, 17))
    e[56:64] = bytes(range(1, 9))
    struct.pack_into("<qq", e, 80, status, -1)
    fields = [(method, 112), (path, 128), (host, 256), (route, 320), (peer, 384)]
    lens = [method, path, host, route, peer]
    struct.pack_into("<HHHHH", e, 96, *[len(x) for x in lens])
    for text, off in fields:
        e[off:off + len(text)] = text.encode()
    return bytes(e)


write("go_event", "http_server", go_event(32, "GET", "/users/7", "GET /users/{id}", "127.0.0.1:8080", "10.1.2.3:50312", 200))
write("go_event", "grpc_server", go_event(34, "", "/grpc.health.v1.Health/Check", "", "", "", 5))

# ----------------------------------------------------------------- Go ELF
WANTED = [
    "net/http.serverHandler.ServeHTTP",
    "net/http.(*Transport).roundTrip",
    "google.golang.org/grpc.(*Server).handleStream",
    "runtime.newproc1",
    "net/http.(*conn).serve",
    "net/http.(*conn).hijacked",
]
TEXT_ADDR = 0x401000
STRIDE = 64
# CMPQ SP, 0x10(R14); JBE +2; PUSHQ BP; RET; RET   (2 RETs), NOP-padded
PROLOGUE = bytes([0x49, 0x3B, 0x66, 0x10, 0x76, 0x02, 0x55])


def func(rets):
    return (PROLOGUE + b"\xC3" * rets).ljust(STRIDE, b"\x90")
# (*conn).serve: CALL ServeHTTP; CALL hijacked; RET
def conn_serve(own, serve_http, hijacked):
    code = b""
    ip = own
    for target in (serve_http, hijacked):
        rel = target - (ip + len(code) + 5)
        code += b"\xE8" + struct.pack("<i", rel)
    return (code + b"\xC3").ljust(STRIDE, b"\x90")


def text_section(serve_http_rets=2):
    addrs = [TEXT_ADDR + STRIDE * i for i in range(len(WANTED))]
    code = b""
    for i, name in enumerate(WANTED):
        if name == "net/http.(*conn).serve":
            code += conn_serve(addrs[i], addrs[0], addrs[5])
        elif i == 0:
            code += func(serve_http_rets)
        else:
            code += func(2)
    return code, addrs


def buildinfo():
    out = b"\xff Go buildinf:" + bytes([8, 2]) + b"\0" * 16
    def s(x):
        x = x.encode()
        return bytes([len(x)]) + x if len(x) < 128 else bytes([len(x) & 0x7F | 0x80, len(x) >> 7]) + x
    mod = "0" * 16 + "path\tex/app\nmod\tex/app\t(devel)\t\ndep\tgoogle.golang.org/grpc\tv1.68.1\th1:x\n" + "1" * 16
    return out + s("go1.23.5") + s(mod)


def pclntab(addrs):
    names = b""
    name_offs = []
    for n in WANTED:
        name_offs.append(len(names))
        names += n.encode() + b"\0"
    nfunc = len(WANTED)
    header_len = 8 + 8 * 8
    funcname_off = header_len
    pcln_off = funcname_off + len(names)
    functab_len = (nfunc + 1) * 8
    funcs_off = functab_len
    words = [nfunc, 0, TEXT_ADDR, funcname_off, 0, 0, 0, pcln_off]
    t = bytes([0xF1, 0xFF, 0xFF, 0xFF, 0, 0, 1, 8]) + b"".join(struct.pack("<Q", w) for w in words)
    t += names
    for i in range(nfunc):
        t += struct.pack("<II", addrs[i] - TEXT_ADDR, funcs_off + 8 * i)
    t += struct.pack("<II", STRIDE * nfunc, 0)
    for i in range(nfunc):
        t += struct.pack("<Ii", addrs[i] - TEXT_ADDR, name_offs[i])
    return t


def note():
    desc = b"abcdefghijklmnopqrstuvwxyz012345/buildid"
    return struct.pack("<III", 4, len(desc), 4) + b"Go\0\0" + desc


def dwarf_sections():
    abbrev = bytes([
        1, 0x11, 1, 0, 0,                    # compile_unit, children
        2, 0x13, 1, 0x03, 0x08, 0, 0,        # structure_type, children, name:string
        3, 0x0D, 0, 0x03, 0x08, 0x38, 0x0B, 0, 0,  # member, name:string, data_member_location:data1
        0,
    ])
    dies = bytes([1])
    for struct_name, fields in [("runtime.g", [("goid", 0x98), ("parentGoid", 0x110)]),
                                ("net/http.Request", [("Method", 0), ("URL", 16), ("Host", 0x80)])]:
        dies += bytes([2]) + struct_name.encode() + b"\0"
        for f, off in fields:
            dies += bytes([3]) + f.encode() + b"\0" + bytes([off & 0xFF])
        dies += bytes([0])
    dies += bytes([0])
    body = struct.pack("<HIB", 4, 0, 8) + dies
    info = struct.pack("<I", len(body)) + body
    return info, abbrev, b"\0"


def elf(with_dwarf, with_symtab, serve_http_rets=2):
    code, addrs = text_section(serve_http_rets)
    info, abbrev, strs = dwarf_sections()
    sections = [("", 0, 0, b"", 0, 0)]  # name, type, flags, data, addr, link/info
    sections.append((".text", 1, 6, code, TEXT_ADDR, 0))
    sections.append((".go.buildinfo", 1, 3, buildinfo(), 0x500000, 0))
    sections.append((".gopclntab", 1, 2, pclntab(addrs), 0x510000, 0))
    sections.append((".note.go.buildid", 7, 2, note(), 0x400f00, 0))
    if with_dwarf:
        sections.append((".debug_info", 1, 0, info, 0, 0))
        sections.append((".debug_abbrev", 1, 0, abbrev, 0, 0))
        sections.append((".debug_str", 1, 0, strs, 0, 0))
    if with_symtab:
        strtab = b"\0"
        syms = b"\0" * 24
        for name, a in zip(WANTED, addrs):
            syms += struct.pack("<IBBHQQ", len(strtab), 0x12, 0, 1, a, STRIDE)
            strtab += name.encode() + b"\0"
        strtab_index = len(sections) + 1
        sections.append((".symtab", 2, 0, syms, 0, strtab_index))
        sections.append((".strtab", 3, 0, strtab, 0, 0))
    shstrtab = b"\0"
    name_offs = []
    for s in sections:
        name_offs.append(len(shstrtab) if s[0] else 0)
        if s[0]:
            shstrtab += s[0].encode() + b"\0"
    name_offs.append(len(shstrtab))
    shstrtab += b".shstrtab\0"
    sections.append((".shstrtab", 3, 0, shstrtab, 0, 0))
    body = b""
    offsets = []
    off = 64
    for s in sections:
        while (off + len(body)) % 8:
            body += b"\0"
        offsets.append(off + len(body))
        body += s[3]
    while (off + len(body)) % 8:
        body += b"\0"
    shoff = off + len(body)
    ehdr = b"\x7fELF" + bytes([2, 1, 1, 0]) + b"\0" * 8
    ehdr += struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, TEXT_ADDR, 0, shoff, 0, 64, 56, 0, 64, len(sections), len(sections) - 1)
    shdrs = b""
    for i, s in enumerate(sections):
        name, typ, flags, data, addr, link = s
        entsize = 24 if typ == 2 else 0
        info_field = 1 if typ == 2 else 0
        shdrs += struct.pack("<IIQQQQIIQQ", name_offs[i], typ, flags, addr, offsets[i] if i else 0,
                             len(data), link, info_field, 8 if i else 0, entsize)
    return ehdr + body + shdrs


write("go_binary", "stripped_pclntab", elf(with_dwarf=True, with_symtab=False))
write("go_binary", "symtab_dwarf", elf(with_dwarf=True, with_symtab=True))
write("go_binary", "no_dwarf", elf(with_dwarf=False, with_symtab=False))
# ServeHTTP with 40 RETs: past the probe's cap of 32 uprobes per function.
write("go_binary", "many_rets", elf(with_dwarf=True, with_symtab=True, serve_http_rets=40))
_, addrs = text_section()
write("pclntab", "go120", pclntab(addrs))
write("buildinfo", "go123", buildinfo())
info, abbrev, strs = dwarf_sections()
write("dwarf", "runtime_g", struct.pack("<HH", len(info), len(abbrev)) + info + abbrev + strs)

# ------------------------------------------------------------------- /proc
CID = "4f1c2b3a5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7a8"
UID = "0e3a6c39-5b0d-4f9b-9d86-6a3a3a0c9f11"
write("proc_cgroup", "cgroupfs_hybrid",
      f"12:memory:/kubepods/besteffort/pod{UID}/{CID}\n1:name=systemd:/kubepods/besteffort/pod{UID}/{CID}\n0::/kubepods/besteffort/pod{UID}/{CID}\n")
write("proc_cgroup", "systemd_v2",
      f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID.replace('-', '_')}.slice/cri-containerd-{CID}.scope\n")
write("proc_cgroup", "status_id", f"containerd://{CID}")
write("proc_mountinfo", "hybrid",
      "25 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n"
      "31 25 0:26 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755\n"
      "32 31 0:27 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw,nsdelegate\n"
      "33 31 0:28 / /sys/fs/cgroup/cpu,cpuacct rw shared:11 - cgroup cgroup rw,cpu,cpuacct\n"
      "41 31 0:38 / /mnt/my\\040cgroup rw - cgroup2 cgroup2 rw\n")
write("proc_net_tcp", "listeners",
      "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
      "   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0\n"
      "   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 20 4 30 10 -1\n")
write("proc_net_tcp", "tcp6",
      "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
      "   0: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5151 1 0000000000000000 100 0 0 10 0\n")
write("proc_maps", "libpython",
      "55d0c0a00000-55d0c0a01000 r--p 00000000 fe:01 123 /usr/bin/uwsgi\n"
      "7f1c2a000000-7f1c2a200000 r-xp 00000000 fe:01 456 /usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0\n")
write("proc_maps", "exe_name", "/usr/local/bin/python3.11")
write("url_text", "target", "/users/42/orders/9f86d081884c7d659a2feaa0c55ad015?token=secret&page=2#frag")
write("url_text", "traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
write("url_text", "host", "[::1]:9000")
