"""Where the instructions go: insn_count.so's per-block counts (`blocks=PATH`) by function.

    python3 benches/arm/symbols.py ELF RUN.blocks [--minus SHORTER.blocks --per K] [--top 25]

Maps each block's address to the function holding it (the ELF's symbol table, via
aarch64-linux-gnu-nm) and prints the functions with the most executed instructions. With
`--minus`, the second run's counts are subtracted first (e.g. a run of 12 decode steps minus one
of 4: what remains is 8 decode steps, load and prefill cancelled) and `--per` divides by the
steps. A position-independent ELF is where qemu-user 7.2 loads one on aarch64, 0x5500000000
(`-d page` shows it); a static one at its link address. Blocks outside the ELF (the dynamic
loader, libc) are summed as "(outside ELF)".
"""

import argparse
import bisect
import collections
import subprocess

PIE_BASE = 0x5500000000


def blocks(path):
    """{address: executed instructions} of an insn_count.so blocks file."""
    out = collections.Counter()
    for line in open(path):
        addr, n, execs = line.split()
        out[int(addr, 16)] += int(n) * int(execs)
    return out


def symbols(elf):
    """(sorted start addresses, names, base) of the ELF's functions."""
    pie = b"DYN" in subprocess.check_output(["readelf", "-h", elf]).split(b"Type:")[1][:40]
    lines = subprocess.check_output(
        ["aarch64-linux-gnu-nm", "-C", "--defined-only", "-n", elf], text=True).splitlines()
    starts, names = [], []
    for line in lines:
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[1] in "tTwW":
            starts.append(int(parts[0], 16))
            names.append(parts[2])
    return starts, names, PIE_BASE if pie else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("elf")
    ap.add_argument("blocks")
    ap.add_argument("--minus", help="a shorter run's blocks file, subtracted")
    ap.add_argument("--per", type=float, default=1, help="divide by this (e.g. steps)")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    counts = blocks(args.blocks)
    if args.minus:
        counts.subtract(blocks(args.minus))
    starts, names, base = symbols(args.elf)
    end = starts[-1] + 0x10000 if starts else 0
    by_name = collections.Counter()
    for addr, n in counts.items():
        offset = addr - base
        i = bisect.bisect_right(starts, offset) - 1
        name = names[i] if 0 <= i and offset < end else "(outside ELF)"
        by_name[name] += n
    total = sum(by_name.values())
    print(f"total {total / args.per / 1e6:.2f} M instructions")
    for name, n in by_name.most_common(args.top):
        print(f"{n / args.per / 1e6:9.2f} M {100 * n / total:5.1f}%  {name[:150]}")


if __name__ == "__main__":
    main()
