#!/usr/bin/env python3
"""Regenerates tests/data/corpus/: one small safetensors file per header or
offset defect (tests/data/test-safetensors.c asserts each file's error code and
message) and a few valid files. The same files seed the fuzzer (tests/fuzz/).
Usage: python3 tests/data/make-safetensors-corpus.py"""
import json
import os
import struct


def st(header, data=b"", length=None):
    """8-byte little-endian header length, header bytes, data buffer."""
    if isinstance(header, (dict, list)):
        header = json.dumps(header, separators=(",", ":")).encode()
    elif isinstance(header, str):
        header = header.encode()
    n = len(header) if length is None else length
    return struct.pack("<Q", n) + header + data


def t(dtype, shape, begin, end):
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


F16 = struct.pack("<4H", 0x3C00, 0xC000, 0x7BFF, 0x0001)        # 1, -2, 65504, 2^-24
BF16 = struct.pack("<2H", 0x3F80, 0xC040)                        # 1, -3
I64 = struct.pack("<q", 12345)
F32 = struct.pack("<4f", 0.5, -1.5, 2.0, 3.25)
valid_header = {"__metadata__": {"format": "pt"},
                "w": t("F32", [2, 2], 0, 16), "h": t("F16", [4], 16, 24),
                "b": t("BF16", [2], 24, 28), "n": t("I64", [], 28, 36)}
valid = st(valid_header, F32 + F16 + BF16 + I64)

files = {
    # valid seeds
    "valid-small.safetensors": valid,
    "valid-empty.safetensors": st({}),
    "valid-zero-size.safetensors": st({"e": t("F32", [0, 3], 0, 0), "w": t("F32", [1], 0, 4)}, F32[:4]),
    # framing
    "empty.safetensors": b"",
    "short-length.safetensors": b"\x10\x00\x00",
    "header-too-large.safetensors": st("{}", length=200_000_000),
    "header-beyond-file.safetensors": st("{}", length=1000),
    "truncated-header.safetensors": valid[:40],
    "truncated-data.safetensors": valid[:-5],
    # header text
    "bad-utf8.safetensors": st(b'{"w\xff":{}}'),
    "nul-in-header.safetensors": st(b'{"w":\x00{}}'),
    "bad-json.safetensors": st('{"w": {"dtype": "F32", '),
    "not-object.safetensors": st("[1, 2, 3]"),
    "deep-nesting.safetensors": st("[" * 100),
    "deep-nesting-in-entry.safetensors": st('{"w":{"dtype":"F32","shape":' + "[" * 20 + "]" * 20 + "}}"),
    "empty-header.safetensors": st(""),
    # entries
    "entry-not-object.safetensors": st({"w": 5}),
    "missing-dtype.safetensors": st({"w": {"shape": [1], "data_offsets": [0, 4]}}, F32[:4]),
    "missing-shape.safetensors": st({"w": {"dtype": "F32", "data_offsets": [0, 4]}}, F32[:4]),
    "missing-offsets.safetensors": st({"w": {"dtype": "F32", "shape": [1]}}, F32[:4]),
    "dtype-not-string.safetensors": st({"w": {"dtype": 3, "shape": [1], "data_offsets": [0, 4]}}, F32[:4]),
    "unknown-dtype.safetensors": st({"w": t("F8_E4M3", [4], 0, 4)}, F32[:4]),
    "shape-not-array.safetensors": st({"w": {"dtype": "F32", "shape": 4, "data_offsets": [0, 16]}}, F32),
    "negative-shape.safetensors": st({"w": t("F32", [-1, 4], 0, 16)}, F32),
    "float-shape.safetensors": st({"w": t("F32", [2.5], 0, 16)}, F32),
    "string-shape.safetensors": st({"w": t("F32", ["4"], 0, 16)}, F32),
    "rank-too-high.safetensors": st({"w": t("F32", [1] * 17, 0, 4)}, F32[:4]),
    "shape-overflow.safetensors": st({"w": t("F32", [2**40, 2**40], 0, 16)}, F32),
    "offsets-wrong-length.safetensors": st({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0]}}, F32),
    "negative-offset.safetensors": st({"w": t("F32", [1], -4, 0)}, F32),
    "float-offset.safetensors": st({"w": t("F32", [1], 0, 4.0)}, F32),
    "offsets-out-of-buffer.safetensors": st({"w": t("F32", [100], 0, 400)}, F32),
    "begin-after-end.safetensors": st({"w": t("F32", [1], 8, 4)}, F32),
    "overlap.safetensors": st({"a": t("F32", [2], 0, 8), "b": t("F32", [2], 4, 12)}, F32),
    "size-mismatch.safetensors": st({"w": t("F32", [2, 2], 0, 12)}, F32),
    "metadata-not-object.safetensors": st({"__metadata__": [1]}),
    "metadata-not-string.safetensors": st({"__metadata__": {"epoch": 3}}),
}

out_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
os.makedirs(out_dir, exist_ok=True)
for name, content in files.items():
    with open(os.path.join(out_dir, name), "wb") as f:
        f.write(content)
