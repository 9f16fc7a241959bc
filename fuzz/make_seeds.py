#!/usr/bin/env python3
"""Writes the committed fuzz seeds, fuzz/corpus/<target>/seed-*, from the real vectors in
core/tests/vectors/ and from small NARs compressed by the real command-line tools.

Run it from anywhere after changing the vectors or a target's input format:

    python3 fuzz/make_seeds.py

Needs xz, lzip, zstd, bzip2, gzip and brotli on PATH (Debian: apt-get install xz-utils lzip
zstd bzip2 gzip brotli). Deterministic: the same tools write the same seeds. Regression
inputs (regress-*) are kept by hand and never touched here.
"""

import base64
import pathlib
import struct
import subprocess

ROOT = pathlib.Path(__file__).resolve().parent.parent
VECTORS = ROOT / "core" / "tests" / "vectors"
CORPUS = ROOT / "fuzz" / "corpus"

def write(target: str, name: str, data: bytes | str) -> None:
    directory = CORPUS / target
    directory.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (directory / f"seed-{name}").write_bytes(data)


def clear_seeds() -> None:
    for seed in CORPUS.glob("*/seed-*"):
        seed.unlink()


def vector(path: str) -> str:
    return (VECTORS / path).read_text()


NIX_NARINFOS = [
    "curl-7.82.0-bin",
    "hello-2.10-w9yy7v61",
    "liblouis-3.22.0",
    "perl-HTTP-Cookies-hex-narhash",
    "ripgrep-15.2.0-zstd",
    "texlive-hyphenex-CA-sha1",
]
GUIX_NARINFOS = ["bordeaux-hello-2.12.2", "generated", "generated-short-r"]
GUIX_KEYS = [
    "bordeaux.guix.gnu.org.pub",
    "berlin.guix.gnu.org.pub",
    "signing-key.pub",
    "signing-key.sec",
    "acl.example",
]


def fields(narinfo: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in narinfo.splitlines():
        key, _, value = line.partition(": ")
        out.setdefault(key, value)
    return out


def nix_fingerprint(narinfo: str) -> str:
    f = fields(narinfo)
    refs = ",".join(f"/nix/store/{r}" for r in sorted(set(f["References"].split())))
    return f"1;{f['StorePath']};{f['NarHash']};{f['NarSize']};{refs}"


def guix_signature_value(narinfo: str) -> str:
    return next(
        line.split(": ", 1)[1] for line in narinfo.splitlines() if line.startswith("Signature: ")
    )


def nix_seeds() -> None:
    for name in NIX_NARINFOS:
        write("nix_narinfo", name, vector(f"nix/{name}.narinfo"))
    hello = vector("nix/hello-2.10-w9yy7v61.narinfo")
    write("nix_narinfo", "hello-crlf", hello.replace("\n", "\r\n"))
    write(
        "nix_narinfo",
        "hello-unsigned-absolute-refs",
        "".join(line + "\n" for line in hello.splitlines() if not line.startswith("Sig:")).replace(
            "References: ", "References: /nix/store/"
        ),
    )

    keys = vector("nix/keys.txt").split()
    secret = vector("nix/cache.example.com-1.secret.TESTONLY").strip()
    signed = dict(line.split(": ", 1) for line in vector("nix/signed-with-cache.example.com-1.txt").splitlines())
    write("nix_sig", "test-key", f"{keys[2]}\n{secret}\n{signed['Sig']}\n{signed['fingerprint']}")
    for name in ["curl-7.82.0-bin", "hello-2.10-w9yy7v61", "texlive-hyphenex-CA-sha1"]:
        text = vector(f"nix/{name}.narinfo")
        sig = fields(text)["Sig"]
        write("nix_sig", name, f"{keys[0]}\n\n{sig}\n{nix_fingerprint(text)}")


def guix_seeds() -> None:
    for name in GUIX_NARINFOS:
        write("guix_narinfo", name, vector(f"guix/{name}.narinfo"))
    generated = vector("guix/generated.narinfo")
    unsigned = "".join(line + "\n" for line in generated.splitlines() if not line.startswith("Signature"))
    write("guix_narinfo", "unsigned", unsigned)

    for name in GUIX_KEYS:
        write("sexp", name, vector(f"guix/{name}"))
        write("guix_sig", name, vector(f"guix/{name}"))
    for name in GUIX_NARINFOS:
        value = guix_signature_value(vector(f"guix/{name}.narinfo"))
        payload = base64.b64decode(value.split(";")[2])
        write("sexp", f"signature-{name}", payload)
        write("guix_sig", f"signature-{name}", payload)
        write("guix_sig", f"field-{name}", value)
    q = bytes.fromhex("3B0971B36AFEE3136EBA35A4CE59C0F312BF98DF76700AA30C01A7667A55CCB5")
    write("sexp", "canonical-public-key", b"(10:public-key(3:ecc(5:curve7:Ed25519)(1:q32:" + q + b")))")
    write(
        "sexp",
        "every-atom-spelling",
        b'(a tok-en./_:*+= "q \\"x\\" \\n\\t\\101\\x42 \\\nend" #0A 0b# |Zm9v| 3:a b 2"hi" 2#6869# 3|Zm9v| "")',
    )


def nar_hash_seeds() -> None:
    curl = fields(vector("nix/curl-7.82.0-bin.narinfo"))
    perl = fields(vector("nix/perl-HTTP-Cookies-hex-narhash.narinfo"))
    digest = bytes.fromhex(perl["NarHash"].split(":")[1])
    seeds = {
        "nix32": curl["NarHash"],
        "hex": perl["NarHash"],
        "base64": "sha256:" + base64.b64encode(digest).decode(),
        "sri": "sha256-" + base64.b64encode(digest).decode(),
        "nar-key": curl["NarHash"].split(":")[1],
        "hash-part": "syd87l2rxw8cbsxmxl853h0r6pdwhwjr",
        "store-path": curl["StorePath"],
        "basename": "5rwxzi7pal3qhpsyfc16gzkh939q1np6-curl-7.82.0.drv",
        "guix-store-path": "/gnu/store/cs56i9digj9qg1bd383cmxc6xrfpdn9n-hello-2.12.2",
        "compression": "zstd",
    }
    for name, text in seeds.items():
        write("nar_hash", name, text)


# ---------------------------------------------------------------------------- NARs


def nar_str(s: bytes) -> bytes:
    return struct.pack("<Q", len(s)) + s + b"\0" * (-len(s) % 8)


def nar_node(node) -> bytes:
    kind = node[0]
    out = nar_str(b"(") + nar_str(b"type")
    if kind == "file":
        _, contents, executable = node
        out += nar_str(b"regular")
        if executable:
            out += nar_str(b"executable") + nar_str(b"")
        out += nar_str(b"contents") + nar_str(contents)
    elif kind == "symlink":
        out += nar_str(b"symlink") + nar_str(b"target") + nar_str(node[1])
    else:
        out += nar_str(b"directory")
        for name, child in sorted(node[1].items()):
            out += nar_str(b"entry") + nar_str(b"(") + nar_str(b"name") + nar_str(name)
            out += nar_str(b"node") + nar_node(child) + nar_str(b")")
    return out + nar_str(b")")


def nar(node) -> bytes:
    return nar_str(b"nix-archive-1") + nar_node(node)


COMPRESSORS = {
    # index in Compression::ALL: command
    0: None,
    1: ["xz", "-6", "-c"],
    2: ["zstd", "-3", "-c", "-q"],
    3: ["bzip2", "-9", "-c"],
    4: ["brotli", "-q", "5", "-c"],
    5: ["gzip", "-n", "-6", "-c"],
    6: ["lzip", "-6", "-c"],
}
NAMES = ["none", "xz", "zstd", "bzip2", "br", "gzip", "lzip"]


def compress(index: int, data: bytes) -> bytes:
    command = COMPRESSORS[index]
    if command is None:
        return data
    return subprocess.run(command, input=data, capture_output=True, check=True).stdout


def nar_stream_seeds() -> None:
    hello = nar(("file", b"Hello, world!\n", False))
    tree = nar(
        (
            "dir",
            {
                b"bin": ("dir", {b"hello": ("file", b"#!/bin/sh\necho hello\n" * 40, True)}),
                b"lib": ("symlink", b"/nix/store/9df65igwjmf2wbw0gbrrgair6piqjgmi-glibc-2.31/lib"),
                b"share": ("file", bytes(range(256)) * 4, False),
            },
        )
    )
    for index, name in enumerate(NAMES):
        # [compression, mode (0: the true NarHash and NarSize), chunk (0: all at once)]
        write("nar_stream", f"{name}-hello", bytes([index, 0, 0]) + compress(index, hello))
        write("nar_stream", f"{name}-tree-chunked", bytes([index, 0, 7]) + compress(index, tree))
        if index != 0:
            # Two streams back to back decode as one NAR (mode 3: hash off by one bit).
            half = len(tree) // 2
            joined = compress(index, tree[:half]) + compress(index, tree[half:])
            if index != 4:  # brotli has no multi-stream form
                write("nar_stream", f"{name}-two-streams", bytes([index, 3, 64]) + joined)


def main() -> None:
    clear_seeds()
    nix_seeds()
    guix_seeds()
    nar_hash_seeds()
    nar_stream_seeds()
    for target in sorted(CORPUS.iterdir()):
        seeds = list(target.glob("seed-*"))
        print(f"{target.name}: {len(seeds)} seeds, {sum(s.stat().st_size for s in seeds)} bytes")


if __name__ == "__main__":
    main()
