#!/usr/bin/env python3
"""Set fields in a .deb's control file, in place, byte for byte reproducibly.

    scripts/lib/deb-control-field.py DEB FIELD VALUE [FIELD VALUE ...]

cargo-deb writes no Built-Using field (Debian Policy 7.8), so scripts/build-deb.sh adds it
here. Only the control member changes: it is rebuilt with the same member order, modes,
owners and mtimes, compressed with single-threaded xz (the same bytes on any machine), and
the other ar members (debian-binary, data.tar.*) are copied unchanged.
"""

import io
import lzma
import os
import sys
import tarfile

AR_MAGIC = b"!<arch>\n"


def read_ar(data):
    if not data.startswith(AR_MAGIC):
        raise ValueError("not an ar archive (no !<arch> magic)")
    members, pos = [], len(AR_MAGIC)
    while pos < len(data):
        header = data[pos:pos + 60]
        if len(header) != 60 or header[58:60] != b"`\n":
            raise ValueError(f"bad ar member header at offset {pos}")
        size = int(header[48:58].decode().strip())
        body = data[pos + 60:pos + 60 + size]
        members.append((header, body))
        pos += 60 + size + (size % 2)
    return members


def ar_member(header, body):
    header = header[:48] + f"{len(body):<10}".encode() + header[58:]
    return header + body + (b"\n" if len(body) % 2 else b"")


def set_field(control, field, value):
    lines = control.decode().split("\n")
    lines = [l for l in lines if not l.lower().startswith(field.lower() + ":")]
    at = next(i for i, l in enumerate(lines) if l.startswith("Description:"))
    lines.insert(at, f"{field}: {value}")
    return "\n".join(lines).encode()


def rebuild_control_tar(compressed, fields):
    raw = lzma.decompress(compressed)
    src = tarfile.open(fileobj=io.BytesIO(raw), mode="r:")
    out = io.BytesIO()
    dst = tarfile.open(fileobj=out, mode="w:", format=tarfile.GNU_FORMAT)
    found = False
    for info in src.getmembers():
        data = src.extractfile(info).read() if info.isfile() else None
        if info.isfile() and info.name in ("./control", "control"):
            for field, value in fields:
                data = set_field(data, field, value)
            found = True
        if data is not None:
            info.size = len(data)
            dst.addfile(info, io.BytesIO(data))
        else:
            dst.addfile(info)
    dst.close()
    if not found:
        raise ValueError("the control member has no ./control file")
    return lzma.compress(out.getvalue(), format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=6)


def main(argv):
    if len(argv) < 4 or len(argv) % 2 != 0:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    deb = argv[1]
    fields = list(zip(argv[2::2], argv[3::2]))
    with open(deb, "rb") as f:
        members = read_ar(f.read())
    out = bytearray(AR_MAGIC)
    for header, body in members:
        name = header[:16].decode().strip().rstrip("/")
        if name == "control.tar.xz":
            body = rebuild_control_tar(body, fields)
        elif name.startswith("control.tar"):
            raise ValueError(f"'{deb}': control member '{name}' is not xz")
        out += ar_member(header, body)
    tmp = f"{deb}.tmp"
    with open(tmp, "wb") as f:
        f.write(out)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, deb)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except (OSError, ValueError, lzma.LZMAError, tarfile.TarError) as e:
        print(f"deb-control-field: error: {e}", file=sys.stderr)
        sys.exit(1)
