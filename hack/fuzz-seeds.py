#!/usr/bin/env python3
"""Writes seed inputs for the protobuf-fed fuzz targets (sync_message, workload_request) into
fuzz/corpus/, so libFuzzer starts from well-formed messages instead of discovering the wire
format byte by byte. Hand-encoded protobuf: field numbers from proto/."""
import pathlib
import sys


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number, value):
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int):
        return varint(number << 3) + varint(value)
    if isinstance(value, str):
        value = value.encode()
    return varint(number << 3 | 2) + varint(len(value)) + value


def message(*fields):
    return b"".join(field(n, v) for n, v in fields)


def entry(i):
    return message(
        (1, f"e{i}"),
        (2, f"spiffe://example.org/w{i}"),
        (3, "spiffe://example.org/agent/n1"),
        (4, "unix:uid:1000"),
        (4, "k8s:ns:default"),
        (5, 3600),
        (7, "w.example"),
        (8, "spiffe://other.org"),
        (11, "hint"),
        (12, i + 1),
    )


BUNDLE = b'{"keys":[],"spiffe_sequence":1,"spiffe_refresh_hint":300}'


def main(root):
    seeds = {
        "sync_message": [
            message((1, 1), (2, message((1, entry(1)), (1, entry(2)), (2, True)))),
            message((1, 2), (3, message((1, entry(3)), (2, "e1"))), (5, "ab12")),
            message((1, 3), (4, message((1, "example.org"), (2, BUNDLE), (3, 1)))),
            message((1, 4), (7, message((1, message((1, "other.org"), (2, BUNDLE)))))),
            message((1, 5), (6, b""), (8, "kid")),
        ],
        "workload_request": [
            b"\x00",
            b"\x01" + message((1, "aud"), (2, "spiffe://example.org/w")),
            b"\x01" + message((1, "b"), (1, "a")),
            b"\x02" + message((1, "aud"), (2, "eyJhbGciOiJFUzI1NiJ9.e30.sig")),
            b"\x03true",
            b"\x03true\x00true",
        ],
    }
    for target, inputs in seeds.items():
        directory = pathlib.Path(root) / target
        directory.mkdir(parents=True, exist_ok=True)
        for n, data in enumerate(inputs):
            (directory / f"seed-{n}").write_bytes(data)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).parent.parent / "fuzz" / "corpus")
