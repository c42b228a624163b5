#!/usr/bin/env python3
"""Builds Corral's test image without a registry: an OCI image-layout tarball
whose one layer is Debian's static busybox with its applet links.

    testbox-image.py OUT.tar [--name docker.io/library/testbox:latest] [--busybox /bin/busybox]

The build is reproducible: every entry is owned by root with mtime 0, and the
gzip header carries mtime 0, so the same busybox always gives the same digests.
"""

import argparse
import gzip
import hashlib
import io
import json
import subprocess
import sys
import tarfile


def entry(name, kind, mode, data=b"", target=""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mtime = 0
    if kind == tarfile.SYMTYPE:
        info.linkname = target
    if kind == tarfile.REGTYPE:
        info.size = len(data)
    return info, (io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def layer(busybox):
    with open(busybox, "rb") as f:
        binary = f.read()
    applets = subprocess.run([busybox, "--list"], check=True, capture_output=True, text=True).stdout.split()
    entries = [entry(d, tarfile.DIRTYPE, 0o755) for d in ("bin", "dev", "proc", "sys", "var", "etc")]
    entries += [entry("tmp", tarfile.DIRTYPE, 0o1777), entry("root", tarfile.DIRTYPE, 0o700)]
    entries.append(entry("bin/busybox", tarfile.REGTYPE, 0o755, binary))
    entries += [entry(f"bin/{a}", tarfile.SYMTYPE, 0o777, target="busybox") for a in sorted(set(applets)) if a != "busybox"]
    entries.append(entry("etc/passwd", tarfile.REGTYPE, 0o644, b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"))
    entries.append(entry("etc/group", tarfile.REGTYPE, 0o644, b"root:x:0:\nstaff:x:50:app\napp:x:1000:\nnogroup:x:65534:\n"))
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, data)
    raw = raw.getvalue()
    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb", mtime=0) as g:
        g.write(raw)
    return raw, gz.getvalue()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--name", default="docker.io/library/testbox:latest")
    ap.add_argument("--busybox", default="/bin/busybox")
    args = ap.parse_args()

    raw, gz = layer(args.busybox)
    blobs = {}

    def blob(data):
        digest = hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return f"sha256:{digest}", len(data)

    layer_digest, layer_size = blob(gz)
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["/bin/sh"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(raw).hexdigest()]},
    }, sort_keys=True).encode()
    config_digest, config_size = blob(config)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer_size}],
    }, sort_keys=True).encode()
    manifest_digest, manifest_size = blob(manifest)
    tag = args.name.rsplit(":", 1)[1] if ":" in args.name.rsplit("/", 1)[-1] else "latest"
    index = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest, "size": manifest_size,
                       "platform": {"architecture": "amd64", "os": "linux"},
                       "annotations": {"io.containerd.image.name": args.name, "org.opencontainers.image.ref.name": tag}}],
    }, sort_keys=True).encode()

    with tarfile.open(args.out, mode="w") as tar:
        files = [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", index)]
        files += [(f"blobs/sha256/{d}", data) for d, data in sorted(blobs.items())]
        for d in ("blobs", "blobs/sha256"):
            info, _ = entry(d, tarfile.DIRTYPE, 0o755)
            tar.addfile(info)
        for name, data in files:
            info, f = entry(name, tarfile.REGTYPE, 0o644, data)
            tar.addfile(info, f)
    print(f"{args.out}: {args.name} ({manifest_digest})")


if __name__ == "__main__":
    sys.exit(main())
