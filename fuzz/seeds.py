#!/usr/bin/env python3
"""Writes the hand-made seeds of fuzz/corpus/TARGET/ (files named seed-*).
Run from the repo root; the JSON-lines seeds are the lines the unit tests use:

    grep -rhoE 'r#"\{"(t|type)":[^#]*"#' src | sed 's/^r#"//; s/"#$//' | sort -u > /tmp/lines
    python3 fuzz/seeds.py /tmp/lines

The fuzzer's own finds (fuzz-*) and crashes (crash-*) sit beside them; see
the README's Fuzzing section."""
import os, struct, sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")

def put(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)

def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF

def tcp(src, dst, sport, dport, seq, ack, flags, win=65535, opts=b"", payload=b"", v6=False):
    hl = 20 + len(opts)
    t = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, (hl // 4) << 4, flags, win, 0, 0) + opts + payload
    if v6:
        pseudo = src + dst + struct.pack("!IxxxB", len(t), 6)
        ip = struct.pack("!IHBB", 6 << 28, len(t), 6, 64) + src + dst
    else:
        pseudo = src + dst + struct.pack("!BBH", 0, 6, len(t))
        ip = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(t), 1, 0x4000, 64, 6, 0) + src + dst
        ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    c = csum(pseudo + t)
    t = t[:16] + struct.pack("!H", c) + t[18:]
    return ip + t

A4, B4 = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
A6, B6 = bytes.fromhex("fd00" + "00" * 13 + "01"), bytes.fromhex("fd00" + "00" * 13 + "02")
SYN, ACK, FIN, RST, PSH = 0x02, 0x10, 0x01, 0x04, 0x08
MSS = b"\x02\x04\x05\xb4"
ALLOPTS = MSS + b"\x01\x03\x03\x07\x04\x02\x08\x0a\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00"

# wire: real packets and their broken shapes.
syn4 = tcp(A4, B4, 40000, 7000, 1, 0, SYN, opts=MSS)
put("wire", "syn4", syn4)
put("wire", "synopts4", tcp(A4, B4, 40000, 7000, 1, 0, SYN, opts=ALLOPTS))
put("wire", "data4", tcp(A4, B4, 40000, 7000, 2, 5, ACK | PSH, payload=b"hello"))
put("wire", "fin4", tcp(B4, A4, 7000, 40000, 6, 7, FIN | ACK))
put("wire", "rst4", tcp(A4, B4, 40000, 7000, 7, 0, RST))
put("wire", "syn6", tcp(A6, B6, 40000, 7000, 1, 0, SYN, opts=MSS, v6=True))
put("wire", "data6", tcp(A6, B6, 40000, 7000, 2, 5, ACK, payload=b"x" * 100, v6=True))
put("wire", "padded4", syn4 + b"\0" * 6)
put("wire", "truncated4", syn4[:30])
frag = bytearray(syn4); frag[6] = 0x20
put("wire", "fragment4", bytes(frag))
udp = bytearray(syn4); udp[9] = 17
put("wire", "udp4", bytes(udp))
lie = bytearray(syn4); lie[3] = 0xff
put("wire", "totallen-lie4", bytes(lie))
hl = bytearray(syn4); hl[32] = 0xf0
put("wire", "tcp-hl-lie4", bytes(hl))
put("wire", "v7", b"\x75\x00\x00")
put("wire", "empty", b"")

# endpoint: programs for closelab::fuzzing::endpoint (see its encoding).
def seg(flags, payload=0, known=True, how=0, pick=0, seqd=0, ackd=0, win=0xffff, opts=b""):
    how |= 2 if known else 0
    return bytes([1, how, pick, flags, seqd & 0xff, ackd & 0xff]) + struct.pack("!H", win) + opts + bytes([payload])

def wait(b):
    return bytes([4, b])

hs = seg(SYN, known=False, how=0x40, opts=MSS) + seg(ACK)
for app in range(6):
    for pol in range(5):
        c0 = app + 6 * pol
        prog = bytes([c0, 0, 7]) + hs + seg(ACK | PSH, 5) + wait(0x41) + seg(FIN | ACK) + wait(0x81) + seg(ACK) + wait(0xc1)
        put("endpoint", "close-app%d-policy%d" % (app, pol), prog)
put("endpoint", "faults", bytes([1, 0x3f, 7]) + hs + seg(ACK | PSH, 20) + wait(0x45) + seg(FIN | ACK) + wait(0x85))
put("endpoint", "keepalive", bytes([1, 0x80, 7]) + hs + wait(0xc5))
put("endpoint", "rst-in-window", bytes([0, 0, 0]) + hs + seg(RST | ACK, seqd=5))
put("endpoint", "syn-on-established", bytes([0, 0, 0]) + hs + seg(SYN, seqd=100))
put("endpoint", "time-wait-syn", bytes([0, 0, 2]) + hs + seg(FIN | ACK) + wait(0x45) + seg(ACK) + seg(SYN, seqd=50))
put("endpoint", "connect-out", bytes([1, 0, 0]) + bytes([6, 0, 4]) + wait(0x42) + wait(0x82))
put("endpoint", "connect-out-v6", bytes([1, 0, 0]) + bytes([6, 1, 4]) + wait(0x42) + wait(0x82))
put("endpoint", "app-close-abort", bytes([1, 0, 0]) + hs + bytes([5, 1, 0]) + wait(0x41) + bytes([5, 1, 1]) + bytes([5, 1, 2]))
put("endpoint", "raw-syn", bytes([1, 0, 0]) + bytes([0, len(syn4)]) + syn4 + wait(0x41))
put("endpoint", "bad-checksum", bytes([1, 0, 0]) + bytes([1, 0x20, 0, SYN | 0x20, 0, 0, 0xff, 0xff, 0, 30, 3]))
put("endpoint", "syn-flood", bytes([1, 0, 0]) + b"".join(bytes([1, 0, p, SYN, p, 0, 0xff, 0xff, 0]) for p in range(8)) + wait(0xc1))
put("endpoint", "v6-handshake", bytes([0, 0, 0]) + seg(SYN, known=False, how=1) + seg(ACK, how=1) + seg(ACK, 9, how=1))

# scenario_file: the shipped scenarios and broken ones.
sc = os.path.join(os.path.dirname(ROOT), "..", "scenarios")
for f in sorted(os.listdir(sc)):
    put("scenario_file", f, open(os.path.join(sc, f), "rb").read())
put("scenario_file", "empty", "")
put("scenario_file", "bad-toml", "name = \"x\n")
put("scenario_file", "unknown-key", "name = \"x\"\nsummary = \"s\"\nnope = 1\n")
put("scenario_file", "bad-fault", "name = \"x\"\nsummary = \"s\"\n[closelab]\nfaults = [\"explode\"]\n")

# fault_rule: the grammar's examples and edges.
for i, r in enumerate(["drop out ack after-fin 1st", "drop in fin 1st", "delay 300ms in fin", "dup out fin",
                       "reorder 2 out data", "drop 30% seed=7", "delay=1.5s conn=3 nth=2", "duplicate in syn synack",
                       "drop any every", "reorder 999999999", "delay 0us", "drop 100%", "drop 0.5%", "drop conn 2 3rd",
                       "", "explode", "delay", "drop 101%", "reorder -1", "drop nth=0", "delay 1e9s",
                       "drop rst in out", "delay 99999999m"]):
    put("fault_rule", "%02d" % i, r)

# jsonl: every event shape the unit tests use, good and bad, and a file.
lines = [l.rstrip("\n") for l in open(sys.argv[1])] if len(sys.argv) > 1 else []
for i, l in enumerate(lines):
    put("jsonl", "%02d" % i, l + "\n")
good = [l for l in lines if '"moon"' not in l and "boom" not in l and "NOPE" not in l]
put("jsonl", "file", "\n".join(good) + "\n")
put("jsonl", "story-file", '{"t":0,"side":"closelab","conn":null,"type":"note","text":"story 1: a"}\n'
    '{"t":1e308,"side":"closelab","conn":1,"type":"note","text":"x"}\n{"t":-1e308,"side":"linux","conn":1,"type":"note","text":"y"}\n'
    '{"type":"verdict","scenario":"lost-fin","round":1,"pass":true,"failures":[],"error":null}\r\n\n')

# control: requests and the answer lines the client reads.
for i, r in enumerate(["ss", "close 1", "close #1", "abort 1", "shutdown 1", "close 2",
                       "close 10.0.0.2:7000-10.0.0.1:49152", "abort 10.0.0.1:49152-10.0.0.2:7000",
                       "shutdown [fd00::2]:7000-[fd00::1]:5", "reboot", "close", "close x", "ss extra",
                       "close 99999999999999999999999", "  ss  \r", "close 1\nss"]):
    put("control", "req%02d" % i, r + "\n")
put("control", "row", '{"conn":1,"state":"CLOSE-WAIT","local":"10.201.0.2:7000","peer":"10.201.0.1:41234","recv_q":1,"send_q":0,"timer":null}\n')
put("control", "row-timer", '{"conn":1,"state":"TIME-WAIT","local":"10.201.0.2:7000","peer":"10.201.0.1:41234","recv_q":0,"send_q":0,"timer":{"name":"timewait","remaining":8.2,"count":0}}\n')
put("control", "row-listen", '{"conn":null,"state":"LISTEN","local":"[::]:7000","peer":"[::]:*","recv_q":0,"send_q":0,"timer":null}\n')
put("control", "result", '{"conn":1,"local":"10.201.0.2:7000","peer":"10.201.0.1:41234","action":"close","from":"CLOSE-WAIT","to":"LAST-ACK"}\n')
