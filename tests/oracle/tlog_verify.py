#!/usr/bin/env python3
"""An independent check of a quorate transparency log, written from the specs alone
(RFC 9162 hashing, C2SP signed-note, tlog-checkpoint, tlog-tiles, tlog-proof), with Python's
`cryptography` for Ed25519. Used by tests/tlog.rs; no quorate code is involved.

    tlog_verify.py BASE_URL CACHE [INDEX]

Fetches BASE_URL/tlog/CACHE/{vkey,checkpoint}, checks the checkpoint's signature under the
vkey, fetches every level-0 hash tile and entry bundle up to the checkpoint's size, checks
each entry hashes to its tile's hash, recomputes the root and compares it with the
checkpoint's; with INDEX also fetches proof/INDEX and verifies the inclusion proof of that
entry. Prints one JSON object (entries as text) on success; exits 1 with the reason on any
failure.
"""
import base64
import hashlib
import json
import sys
import urllib.request

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def fail(why):
    print(f"tlog_verify: {why}", file=sys.stderr)
    sys.exit(1)


def get(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.read()


def leaf(entry):
    return hashlib.sha256(b"\x00" + entry).digest()


def node(l, r):
    return hashlib.sha256(b"\x01" + l + r).digest()


def mth(leaves):
    """RFC 9162 2.1.1: the hash of a list of leaf hashes."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return node(mth(leaves[:k]), mth(leaves[k:]))


def parse_vkey(text):
    name, keyid, key = text.strip().split("+", 2)
    raw = base64.b64decode(key)
    if raw[0] != 1 or len(raw) != 33:
        fail("vkey is not an Ed25519 key")
    want = hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4]
    if want.hex() != keyid:
        fail(f"vkey key id {keyid} is not {want.hex()}")
    return name, want, Ed25519PublicKey.from_public_bytes(raw[1:])


def open_note(note, name, keyid, key):
    """C2SP signed-note: text, blank line, signature lines; one by our key must verify."""
    text, sep, sigs = note.partition("\n\n")
    if not sep:
        fail("note has no signature block")
    text += "\n"
    ok = False
    for line in sigs.splitlines():
        if not line.startswith("\u2014 "):
            fail(f"bad signature line {line!r}")
        signer, sig = line[2:].split(" ")
        raw = base64.b64decode(sig)
        if signer == name and raw[:4] == keyid:
            key.verify(raw[4:], text.encode())  # raises on a bad signature
            ok = True
    if not ok:
        fail("no signature by the log's key")
    return text


def tile_path(kind, index, width):
    groups = []
    n = index
    while True:
        groups.append(n % 1000)
        n //= 1000
        if n == 0:
            break
    parts = [f"x{g:03d}" for g in reversed(groups[1:])] + [f"{groups[0]:03d}"]
    path = f"tile/{kind}/" + "/".join(parts)
    return path + (f".p/{width}" if width < 256 else "")


def inclusion_root(index, size, leaf_hash, proof):
    """RFC 9162 2.1.3.2."""
    fn, sn, r = index, size - 1, leaf_hash
    for p in proof:
        if sn == 0:
            fail("inclusion proof too long")
        if fn & 1 or fn == sn:
            r = node(p, r)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        fail("inclusion proof too short")
    return r


def main():
    base, cache = sys.argv[1].rstrip("/"), sys.argv[2]
    index = int(sys.argv[3]) if len(sys.argv) > 3 else None
    log = f"{base}/tlog/{cache}"
    name, keyid, key = parse_vkey(get(f"{log}/vkey").decode())
    body = open_note(get(f"{log}/checkpoint").decode(), name, keyid, key)
    lines = body.split("\n")
    origin, size, root = lines[0], int(lines[1]), base64.b64decode(lines[2])
    if origin != name:
        fail(f"origin {origin!r} is not the key's name {name!r}")
    entries, leaves = [], []
    for t in range((size + 255) // 256):
        width = min(256, size - t * 256)
        hashes = get(f"{log}/{tile_path('0', t, width)}")
        bundle = get(f"{log}/{tile_path('entries', t, width)}")
        if len(hashes) != 32 * width:
            fail(f"tile {t} has {len(hashes)} bytes")
        pos = 0
        for i in range(width):
            n = int.from_bytes(bundle[pos:pos + 2], "big")
            entry = bundle[pos + 2:pos + 2 + n]
            pos += 2 + n
            if leaf(entry) != hashes[32 * i:32 * i + 32]:
                fail(f"entry {t * 256 + i} does not hash to its tile")
            entries.append(entry.decode())
            leaves.append(leaf(entry))
        if pos != len(bundle):
            fail(f"bundle {t} has trailing bytes")
    if mth(leaves) != root:
        fail("the entries do not hash to the checkpoint's root")
    out = {"origin": origin, "size": size, "entries": entries}
    if index is not None:
        text = get(f"{log}/proof/{index}").decode()
        head, _, checkpoint = text.partition("\n\n")
        head_lines = head.split("\n")
        if head_lines[0] != "c2sp.org/tlog-proof@v1":
            fail(f"not a tlog-proof: {head_lines[0]!r}")
        rest = head_lines[1:]
        if rest and rest[0].startswith("extra "):
            rest = rest[1:]
        if not rest[0].startswith("index "):
            fail("no index line")
        if int(rest[0][6:]) != index:
            fail("the proof is for another index")
        proof = [base64.b64decode(h) for h in rest[1:] if h]
        cbody = open_note(checkpoint, name, keyid, key).split("\n")
        psize, proot = int(cbody[1]), base64.b64decode(cbody[2])
        if inclusion_root(index, psize, leaves[index], proof) != proot:
            fail("the inclusion proof does not lead to the checkpoint's root")
        out["proved"] = index
    print(json.dumps(out))


main()
