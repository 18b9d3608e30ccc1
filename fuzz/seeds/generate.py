#!/usr/bin/env python3
"""Writes the seed corpora in fuzz/seeds/<target>/: a few valid encodings per decoder.

Checksums are left out on purpose: each target recomputes them (it seals or frames the input),
so the seeds only need the right structure. Run from anywhere: python3 fuzz/seeds/generate.py
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def varint(value):
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def write(target, name, data):
    os.makedirs(os.path.join(HERE, target), exist_ok=True)
    with open(os.path.join(HERE, target, name), "wb") as f:
        f.write(data)


def resp():
    write("resp_request", "set", b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nvalue\r\n")
    write("resp_request", "pipelined", b"*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")
    write("resp_request", "inline", b"SET key value\r\nGET key\n")
    write("resp_request", "reply_array", b"*3\r\n+OK\r\n:42\r\n$3\r\nabc\r\n")
    write("resp_request", "reply_null", b"$-1\r\n")


def admin():
    write("admin_request", "metrics", b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
    write("admin_request", "query", b"GET /info?pretty=1 HTTP/1.0\r\n\r\n")
    write("admin_request", "post", b"POST /health HTTP/1.1\r\nContent-Length: 0\r\n\r\n")


def repl_entry(flags, key, value=b"", hlc=7, node=1):
    out = bytes([flags]) + varint(len(key))
    if flags == 0:
        out += varint(len(value))
    elif flags == 2:
        out += varint(100_000)
    out += struct.pack("<QQ", hlc, node) + key
    if flags == 0:
        out += value
    return out


def replication():
    entries = [repl_entry(0, b"key", b"value"), repl_entry(1, b"gone"), repl_entry(2, b"big")]
    body = struct.pack("<H", len(entries)) + b"".join(entries)
    rumor = bytes([1]) + struct.pack("<QII", 99, 5, 1) + body
    write("replication_message", "rumor", bytes([0x40]) + rumor)
    write("replication_message", "ack", bytes([0x41]) + struct.pack("<HQQ", 2, 99, 100))
    write("replication_message", "digest", bytes([0x48]) + struct.pack("<HQQ", 3, 10, 12345))
    elements = struct.pack("<HQQHQQ", 3, 0, 0, 2, 5, 9)
    write("replication_message", "elements", bytes([0x49]) + elements)
    write("replication_message", "need", bytes([0x4A]) + struct.pack("<HHQ", 3, 1, 5))
    write("replication_message", "entries", bytes([0x4B]) + struct.pack("<H", 3) + body)


def rc_header(kind, items, flags=0, sequence=0):
    """Header of session 42, partition 3 (the session the reconcile_session target starts)."""
    return b"SR" + struct.pack("<BBIQIIH", kind, flags, 0, 42, 3, sequence, items)


def reconcile():
    write("reconcile_message", "open", rc_header(1, 2) + struct.pack("<QQQ", 10, 1, 2))
    request = struct.pack("<BIHBB", 1, 0, 2, 1, 9)
    write("reconcile_message", "request", rc_header(2, 1) + request)
    sketch = struct.pack("<BIIBB", 7, 3, 4, 1, 2) + struct.pack("<QQ", 5, 6)
    write("reconcile_message", "sketches", rc_header(3, 1) + sketch)
    resolve = struct.pack("<BIBH", 7, 3, 2, 2) + b"\x01\x02\x03\x04"
    write("reconcile_message", "resolve", rc_header(4, 1, sequence=1) + resolve)
    write("reconcile_message", "missing", rc_header(5, 2) + struct.pack("<II", 0, 3))
    write("reconcile_message", "finish", rc_header(6, 0, flags=3, sequence=4))
    write("reconcile_message", "finish_ack", rc_header(7, 0))
    # reconcile_session: element count, then len:u8-prefixed messages for the state machines.
    open_message = rc_header(1, 2) + struct.pack("<QQQ", 10, 1, 2)
    messages = [open_message, rc_header(3, 1) + sketch, rc_header(7, 0)]
    session = bytes([5]) + b"".join(bytes([len(m)]) + m for m in messages)
    write("reconcile_session", "open_then_more", session)


def wal_entry(key, value, hlc=5, node=1):
    tag = 0 if value is None else len(value) + 1
    out = varint(len(key)) + key + varint(tag) + (value or b"")
    return out + struct.pack("<QQ", hlc, node)


def wal():
    batch = varint(2) + wal_entry(b"a", b"1") + wal_entry(b"bb", None)
    write("wal_record", "batch_framed", b"\x01" + batch)
    write("wal_record", "empty_batch_framed", b"\x01" + varint(0))


def block_entry(shared, suffix, value, hlc):
    tag = 0 if value is None else len(value) + 1
    out = varint(shared) + varint(len(suffix)) + varint(tag) + struct.pack("<QQ", hlc, 1)
    return out + suffix + (value or b"")


def sst():
    entries = block_entry(0, b"apple", b"red", 1) + block_entry(1, b"vocado", None, 2)
    restart_second = len(entries)
    entries += block_entry(0, b"banana", b"yellow", 3)
    body = entries + struct.pack("<III", 0, restart_second, 2)
    write("sst_block", "body_two_restarts", body)
    write("sst_block", "keys", b"apple\xffavocado\xffbanana\xffcherry")
    index = b""
    for key, offset, length in [(b"avocado", 0, 4096), (b"cherry", 4096, 3000)]:
        index += varint(len(key)) + key + varint(offset) + varint(length)
    write("sst_index", "two_handles", index)
    write("bloom_filter", "one_line", bytes(range(64)) + b"\x07")
    write("bloom_filter", "two_lines", b"\xaa" * 128 + b"\x07")


def manifest_edit_add(level, number, smallest, largest):
    out = b"\x01" + varint(level) + varint(number) + varint(8192)
    out += varint(len(smallest)) + smallest + varint(len(largest)) + largest
    return out + varint(100) + varint(77)


def manifest():
    first = manifest_edit_add(0, 1, b"a", b"m") + b"\x04" + varint(2)
    second = manifest_edit_add(1, 2, b"a", b"z") + b"\x02" + varint(1) + b"\x03" + varint(1)
    write("manifest_record", "two_edits_framed", b"\x01" + first + b"\xfe" + second)
    write("manifest_record", "snapshot_framed", b"\x01" + b"\x03\x00\x04\x01\x05\x00")


if __name__ == "__main__":
    resp()
    admin()
    replication()
    reconcile()
    wal()
    sst()
    manifest()
