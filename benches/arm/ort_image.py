#!/usr/bin/env python3
"""ONNX Runtime's side of benches/arm/clip.sh: one CLIP image tower, one thread, N images.

Inside the arm64 chroot, under qemu-user (the instruction-counting plugin outside it):

    qemu-aarch64 -L target/arm-chroot target/arm-chroot/usr/bin/python3 \\
        benches/arm/ort_image.py run MODEL.onnx --images N [--maps MAPS]

loads the model (intra_op_num_threads=1, inter_op_num_threads=1, sequential), runs one warm-up
image, then N more, and prints a JSON line (ORT version, images, the first embedding values).
Paths are relative to the repository: qemu's -L only redirects absolute ones. With --maps it
writes the guest's mappings of ORT's native library there (for `dot`).

On the host (no numpy, no ORT needed):

    python3 benches/arm/ort_image.py dot --chroot target/arm-chroot \\
        LONG.blocks LONG.maps SHORT.blocks SHORT.maps --per K

how many SDOT/UDOT (Armv8.2 dot product), SMMLA/UMMLA/USMMLA (i8mm) and FMLA instructions the
two runs' executed blocks in ORT's library hold, the shorter run's subtracted, per image
(blocks files: benches/arm/insn_count.c's `blocks=`). It says which kernels ORT chose: SDOT or
UDOT per image > 0 means its dot-product int8 kernels ran.
"""
import argparse
import collections
import json
import os
import re
import subprocess
import sys

LIB = "onnxruntime_pybind11_state"   # the wheel's native library (ORT and MLAS, statically)


def run(args):
    import numpy as np
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    s = ort.InferenceSession(args.model, so, providers=["CPUExecutionProvider"])
    inp = s.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    shape[0] = 1
    px = np.random.RandomState(0).randn(*shape).astype(np.float32)
    out = s.run(None, {inp.name: px})            # warm-up: first-run allocations, packing
    for _ in range(args.images):
        out = s.run(None, {inp.name: px})
    if args.maps:
        with open("/proc/self/maps") as f:
            lines = [line for line in f if LIB in line]
        with open(args.maps, "w") as f:
            f.writelines(lines)
    print(json.dumps({"model": args.model, "images": args.images, "ort": ort.__version__,
                      "first": [round(float(x), 5) for x in out[0].ravel()[:4]]}))


# ---- host side: which instructions ran in ORT's library ----
CLASSES = {
    "sdot/udot": re.compile(r"^(sdot|udot)$"),
    "i8mm": re.compile(r"^(smmla|ummla|usmmla|usdot|sudot)$"),
    "fmla": re.compile(r"^fmla$"),
}


def mapping(maps_path, chroot):
    """(host path of the library, load bias) from a --maps file."""
    for line in open(maps_path):
        parts = line.split()
        start, offset, path = int(parts[0].split("-")[0], 16), int(parts[2], 16), parts[-1]
        if offset == 0:
            if not os.path.exists(path) or not path.startswith(os.path.abspath(chroot)):
                path = os.path.join(chroot, path.lstrip("/"))
            return path, start
    sys.exit(f"{maps_path}: no mapping of {LIB} at offset 0")


def first_load_vaddr(lib):
    for line in subprocess.check_output(["readelf", "-lW", lib], text=True).splitlines():
        if line.split()[:1] == ["LOAD"]:
            return int(line.split()[2], 16)
    return 0


def wanted_addresses(lib):
    """{ELF address: class} of the instructions in CLASSES, from objdump's disassembly."""
    out = {}
    p = subprocess.Popen(["aarch64-linux-gnu-objdump", "-d", "--no-show-raw-insn", lib],
                         stdout=subprocess.PIPE, text=True, bufsize=1 << 20)
    for line in p.stdout:
        # "  1234:	sdot	v0.4s, v1.16b, v2.4b[0]"
        parts = line.split("\t")
        if len(parts) < 2 or not parts[0].endswith(":"):
            continue
        mnemonic = parts[1].strip()
        for name, rx in CLASSES.items():
            if rx.match(mnemonic):
                out[int(parts[0][:-1], 16)] = name
    p.wait()
    return out


def executed(blocks_path, maps_path, chroot, wanted_cache):
    """{class: executed count} of one run's blocks inside the library."""
    lib, base = mapping(maps_path, chroot)
    if lib not in wanted_cache:
        wanted_cache[lib] = (wanted_addresses(lib), first_load_vaddr(lib))
    wanted, vaddr0 = wanted_cache[lib]
    bias = base - vaddr0
    counts = collections.Counter()
    for line in open(blocks_path):
        addr, n, execs = line.split()
        start, n, execs = int(addr, 16) - bias, int(n), int(execs)
        for a in range(start, start + 4 * n, 4):
            c = wanted.get(a)
            if c:
                counts[c] += execs
    return counts


def dot(args):
    cache = {}
    long_ = executed(args.long_blocks, args.long_maps, args.chroot, cache)
    short = executed(args.short_blocks, args.short_maps, args.chroot, cache)
    print(json.dumps({c: round((long_[c] - short[c]) / args.per) for c in CLASSES}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="inside the chroot: one warm-up image, then --images more")
    r.add_argument("model")
    r.add_argument("--images", type=int, default=1)
    r.add_argument("--maps", help="write the guest mappings of ORT's library here")
    d = sub.add_parser("dot", help="on the host: dot-product instructions executed per image")
    d.add_argument("--chroot", default="target/arm-chroot")
    d.add_argument("--per", type=float, default=1)
    d.add_argument("long_blocks")
    d.add_argument("long_maps")
    d.add_argument("short_blocks")
    d.add_argument("short_maps")
    args = ap.parse_args()
    run(args) if args.cmd == "run" else dot(args)


if __name__ == "__main__":
    main()
