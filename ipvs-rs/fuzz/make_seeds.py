#!/usr/bin/env python3
"""Turns the kernel captures (tests/fixtures/kernel-*/*.hex) into binary fuzz seeds.

  seeds/decode_reply/<capture>-<name>.bin  whole netlink messages (nlmsghdr onwards)
  seeds/roundtrip/<capture>-<name>.bin     IPVS messages only, from the genlmsghdr onwards

Run from anywhere: python3 ipvs-rs/fuzz/make_seeds.py. Idempotent; identical payloads are
written once. Hand-made regression inputs (seeds/*/regress-*.bin) are left alone.
"""
import pathlib
import struct

FUZZ = pathlib.Path(__file__).resolve().parent
FIXTURES = FUZZ.parent / "tests" / "fixtures"
GENL_ID_CTRL = 0x10  # nlctrl: family look-ups, not IPVS
NLMSG_MIN_TYPE = 0x10


def unhex(text):
    digits = "".join(line.split("#", 1)[0] for line in text.splitlines())
    return bytes.fromhex("".join(digits.split()))


def main():
    out = {name: FUZZ / "seeds" / name for name in ("decode_reply", "roundtrip")}
    for d in out.values():
        d.mkdir(parents=True, exist_ok=True)
        for old in d.glob("kernel-*.bin"):  # regress-*.bin are kept
            old.unlink()
    seen = {name: set() for name in out}
    counts = {name: 0 for name in out}

    def write(target, name, data):
        if data in seen[target]:
            return
        seen[target].add(data)
        (out[target] / f"{name}.bin").write_bytes(data)
        counts[target] += 1

    for path in sorted(FIXTURES.glob("kernel-*/*.hex")):
        data = unhex(path.read_text())
        name = f"{path.parent.name}-{path.stem}"
        write("decode_reply", name, data)
        # Every message of the datagram (one per file today, but be general).
        off, i = 0, 0
        while off + 16 <= len(data):
            length, mtype = struct.unpack_from("=IH", data, off)
            if length < 16 or off + length > len(data):
                break
            if mtype >= NLMSG_MIN_TYPE and mtype != GENL_ID_CTRL:
                write("roundtrip", f"{name}-{i}", data[off + 16 : off + length])
            off += (length + 3) & ~3
            i += 1
    for target, n in counts.items():
        print(f"{target}: {n} seeds in {out[target]}")


if __name__ == "__main__":
    main()
