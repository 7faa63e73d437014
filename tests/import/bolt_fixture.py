#!/usr/bin/env python3
"""Write a BoltDB file (the page format of go.etcd.io/bbolt) for import tests.

Usage: bolt_fixture.py SPEC.json OUT.db

SPEC = {"page_size": 4096, "buckets": {NAME: {"inline": bool, "items": [[KEY_HEX, VALUE_HEX], ...]}}}

Layout: pages 0 and 1 are meta pages (the second one newer, as after a commit), page 2 an
empty freelist, then one leaf page per non-inline bucket (spilling into overflow pages when
large) -- or, with `leaf_items`, a branch page over several leaf pages -- and last the root
bucket's leaf page. Keys are sorted, as bolt requires.
"""
import json
import struct
import sys

BRANCH, LEAF, META, FREELIST = 0x01, 0x02, 0x04, 0x10
MAGIC, VERSION = 0xED0CDAED, 2


def fnv64a(data):
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def leaf(pid, items, flags_for=lambda k: 0):
    items = sorted(items)
    n = len(items)
    elems, data = b"", b""
    for i, (k, v) in enumerate(items):
        elem_off = 16 + 16 * i
        data_off = 16 + 16 * n + len(data)
        elems += struct.pack("<IIII", flags_for(k), data_off - elem_off, len(k), len(v))
        data += k + v
    return bytearray(struct.pack("<QHHI", pid, LEAF, n, 0) + elems + data)


def branch(pid, children):
    # children: [(first_key, pgid)]
    n = len(children)
    elems, data = b"", b""
    for i, (k, child) in enumerate(children):
        elem_off = 16 + 16 * i
        data_off = 16 + 16 * n + len(data)
        elems += struct.pack("<IIQ", data_off - elem_off, len(k), child)
        data += k
    return bytearray(struct.pack("<QHHI", pid, BRANCH, n, 0) + elems + data)


def main():
    spec = json.load(open(sys.argv[1]))
    ps = spec.get("page_size", 4096)
    pages = {}  # pid -> bytes (unpadded)
    next_pid = [3]

    def alloc(body_fn):
        pid = next_pid[0]
        body = body_fn(pid)
        span = max(1, -(-len(body) // ps))
        struct.pack_into("<I", body, 12, span - 1)  # overflow count
        pages[pid] = body
        next_pid[0] += span
        return pid

    root_items = []
    for name, b in spec["buckets"].items():
        items = [(bytes.fromhex(k), bytes.fromhex(v)) for k, v in b["items"]]
        if b.get("inline"):
            value = struct.pack("<QQ", 0, 0) + bytes(leaf(0, items))
        else:
            items.sort()
            chunk = b.get("leaf_items", 0)
            if chunk and len(items) > chunk:
                kids = []
                for i in range(0, len(items), chunk):
                    part = items[i:i + chunk]
                    kids.append((part[0][0], alloc(lambda pid, part=part: leaf(pid, part))))
                root = alloc(lambda pid: branch(pid, kids))
            else:
                root = alloc(lambda pid, items=items: leaf(pid, items))
            value = struct.pack("<QQ", root, 0)
        root_items.append((name.encode(), value))
    root_pid = alloc(lambda pid: leaf(pid, root_items, flags_for=lambda k: 0x01))
    pages[2] = bytearray(struct.pack("<QHHI", 2, FREELIST, 0, 0))
    high = next_pid[0]
    for pid, txid in ((0, 1), (1, 2)):
        meta = struct.pack("<IIII", MAGIC, VERSION, ps, 0) + struct.pack("<QQ", root_pid, 0)
        meta += struct.pack("<QQQ", 2, high, txid)
        meta += struct.pack("<Q", fnv64a(meta))
        pages[pid] = bytearray(struct.pack("<QHHI", pid, META, 0, 0) + meta)
    with open(sys.argv[2], "wb") as out:
        for pid in range(high):
            if pid in pages:
                body = pages[pid]
                span = max(1, -(-len(body) // ps))
                out.write(bytes(body) + b"\0" * (span * ps - len(body)))
            # pages covered by an earlier page's overflow are part of its bytes


if __name__ == "__main__":
    main()
