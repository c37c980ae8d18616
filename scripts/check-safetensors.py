#!/usr/bin/env python3
"""Checks attnlab checkpoints against Python's safetensors, both ways.

    python3 scripts/check-safetensors.py RUN [TRAINER]

RUN is a run folder written by `trainer train` (config.yaml and
checkpoint.safetensors); TRAINER the trainer binary (default bin/trainer).
Needs Python with safetensors and torch. It checks that:

1. safetensors.torch.load_file and safetensors.safe_open read the
   checkpoint, and every parameter and buffer that `trainer eval --tensors`
   loads has the same name, shape and dtype there, the same first values and
   the same sum; the optimizer moments are float64; the metadata holds the
   format, step and both CRC-32C checksums, and the checksums computed here
   (of the data section, and of the other metadata entries as
   safetensors/safetensors.go defines it) match the recorded ones.
2. A file written by safetensors.torch.save_file with the same tensors and
   metadata (checksums recomputed here) evaluates in `trainer eval` exactly as
   the original; one with a weight zeroed evaluates differently and shows the
   zero; one whose recorded checksum is wrong is refused with a one-line
   error and a non-zero exit.

It prints one line per check and exits non-zero if any fails.
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

FAILED = []


def check(ok, what):
    print(("ok    " if ok else "FAIL  ") + what)
    if not ok:
        FAILED.append(what)


def crc32c(data):
    """CRC-32C (Castagnoli), the checksum attnlab records."""
    table = crc32c.table
    if table is None:
        table = []
        for i in range(256):
            c = i
            for _ in range(8):
                c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
            table.append(c)
        crc32c.table = table
    c = 0xFFFFFFFF
    for b in data:
        c = table[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


crc32c.table = None


def uvarint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def metadata_crc(meta):
    """The CRC-32C of the metadata entries but the two checksums, sorted by
    key, each key and value preceded by its length as a uvarint."""
    b = bytearray()
    for k in sorted(k for k in meta if k not in ("data_crc32c", "metadata_crc32c")):
        kb, vb = k.encode(), meta[k].encode()
        b += uvarint(len(kb)) + kb + uvarint(len(vb)) + vb
    return crc32c(bytes(b))


def data_section(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    return raw[8 + n:]


def trainer_eval(trainer, run, tensors=False):
    cmd = [trainer, "eval", "--run", run, "--json"] + (["--tensors"] if tensors else [])
    p = subprocess.run(cmd, capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


def save_with_checksums(tensors, meta, path):
    """save_file, then the data checksum of what it wrote and the metadata
    checksum, then save again: the data section does not depend on the
    metadata, so the second file's data is the first's."""
    meta = {k: v for k, v in meta.items() if k not in ("data_crc32c", "metadata_crc32c")}
    save_file(tensors, path, metadata=dict(meta, data_crc32c="00000000", metadata_crc32c="00000000"))
    data = data_section(path)
    meta["data_crc32c"] = "%08x" % crc32c(data)
    meta["metadata_crc32c"] = "%08x" % metadata_crc(meta)
    save_file(tensors, path, metadata=meta)
    check(data_section(path) == data, "save_file wrote the same data section twice (the checksum covers it)")


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    run = sys.argv[1]
    trainer = sys.argv[2] if len(sys.argv) > 2 else "bin/trainer"
    ckpt = os.path.join(run, "checkpoint.safetensors")
    print("safetensors from", __import__("safetensors").__version__, "torch", torch.__version__)

    rc, out, err = trainer_eval(trainer, run, tensors=True)
    check(rc == 0, "trainer eval --tensors reads the checkpoint (%s)" % err.strip())
    if rc != 0:
        sys.exit(1)
    view = json.loads(out)
    print("trainer eval: step %d, eval_accuracy %.4f, eval_loss %.4f, %d tensors"
          % (view["step"], view["eval_accuracy"], view["eval_loss"], len(view["tensors"])))

    # 1. Python reads what the trainer wrote.
    loaded = load_file(ckpt)
    with safe_open(ckpt, framework="pt") as f:
        keys = set(f.keys())
        meta = f.metadata()
        first = f.get_tensor(view["tensors"][0]["name"])
    check(keys == set(loaded), "load_file and safe_open see the same %d tensors" % len(keys))
    check(torch.equal(first, loaded[view["tensors"][0]["name"]]), "safe_open.get_tensor equals load_file")
    bad = []
    for t in view["tensors"]:
        x = loaded.get(t["name"])
        if x is None:
            bad.append(t["name"] + ": missing")
            continue
        want_dtype = {"float32": torch.float32, "float64": torch.float64}[t["dtype"]]
        if list(x.shape) != t["shape"] or x.dtype != want_dtype:
            bad.append("%s: %s %s, trainer %s %s" % (t["name"], list(x.shape), x.dtype, t["shape"], t["dtype"]))
            continue
        flat = x.flatten().double()
        firsts = [float(v) for v in flat[: len(t["first"])]]
        s = float(flat.sum())
        if firsts != t["first"] or abs(s - t["sum"]) > 1e-6 * max(1.0, abs(t["sum"])) + 1e-9 * flat.numel():
            bad.append("%s: first %s sum %.9g, trainer %s %.9g" % (t["name"], firsts, s, t["first"], t["sum"]))
    check(not bad, "every tensor trainer eval loads has its name, shape, dtype, first values and sum in Python" + ("; " + "; ".join(bad[:5]) if bad else ""))
    moments = [k for k in loaded if k.startswith("optimizer.")]
    params = [t["name"] for t in view["tensors"] if not t["name"].startswith("buffer.")]
    check(len(moments) == 2 * len(params) and all(loaded[k].dtype == torch.float64 for k in moments),
          "the AdamW moments are there, float64 (%d tensors)" % len(moments))
    check(meta.get("format") == "attnlab-checkpoint-2" and meta.get("step") == str(view["step"]),
          "metadata: format %s, step %s" % (meta.get("format"), meta.get("step")))
    data = data_section(ckpt)
    check(meta.get("data_crc32c") == "%08x" % crc32c(data),
          "data_crc32c %s is the CRC-32C of the %d data bytes" % (meta.get("data_crc32c"), len(data)))
    check(meta.get("metadata_crc32c") == "%08x" % metadata_crc(meta),
          "metadata_crc32c %s is the CRC-32C of the other %d entries" % (meta.get("metadata_crc32c"), len(meta) - 2))

    # 2. The trainer reads what Python wrote.
    tmp = tempfile.mkdtemp()
    try:
        def copy_run(name, tensors, metadata):
            dst = os.path.join(tmp, name)
            os.makedirs(dst)
            shutil.copy(os.path.join(run, "config.yaml"), dst)
            save_with_checksums(tensors, metadata, os.path.join(dst, "checkpoint.safetensors"))
            return dst

        same = copy_run("same", loaded, meta)
        rc, out, err = trainer_eval(trainer, same)
        res = json.loads(out) if rc == 0 else {}
        check(rc == 0 and res.get("eval_loss") == view["eval_loss"] and res.get("eval_accuracy") == view["eval_accuracy"],
              "a file from save_file evaluates exactly as the original (%s)" % (out.strip() or err.strip()))

        name = params[0]
        zeroed = dict(loaded)
        zeroed[name] = torch.zeros_like(loaded[name])
        changed = copy_run("zeroed", zeroed, meta)
        rc, out, err = trainer_eval(trainer, changed, tensors=True)
        res = json.loads(out) if rc == 0 else {}
        sums = {t["name"]: t["sum"] for t in res.get("tensors", [])}
        check(rc == 0 and sums.get(name) == 0 and res.get("eval_loss") != view["eval_loss"],
              "%s zeroed in Python: the trainer loads the zeros (sum %s) and evaluates differently (loss %s, was %s)"
              % (name, sums.get(name), res.get("eval_loss"), view["eval_loss"]))

        corrupt = copy_run("corrupt", loaded, meta)
        path = os.path.join(corrupt, "checkpoint.safetensors")
        with safe_open(path, framework="pt") as f:
            m = f.metadata()
        m["data_crc32c"] = "%08x" % (int(m["data_crc32c"], 16) ^ 1)
        save_file(loaded, path, metadata=m)
        rc, out, err = trainer_eval(trainer, corrupt)
        lines = err.strip().splitlines()
        check(rc != 0 and len(lines) == 1 and "checksum" in lines[0],
              "a wrong data checksum is refused in one line, exit %d: %s" % (rc, err.strip()))
    finally:
        shutil.rmtree(tmp)

    print("FAILED: %d check(s)" % len(FAILED) if FAILED else "all checks passed")
    sys.exit(1 if FAILED else 0)


if __name__ == "__main__":
    main()
