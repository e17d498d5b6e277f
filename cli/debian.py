"""Installing the test peers the platform talks to from Debian packages, when they are absent."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

_updated = False


def ensure(binary: str, package: str) -> str:
    """Path of `binary`, installing Debian's `package` first when it is missing (needs root)."""
    global _updated
    found = shutil.which(binary)
    if found:
        return found
    if os.geteuid() != 0:
        raise RuntimeError(f"{binary} is missing and installing it needs root: apt-get install {package}")
    print(f"[debian] installing {package} ...", file=sys.stderr, flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    steps = ([] if _updated else [["apt-get", "update", "-q"]]) + [
        ["apt-get", "install", "-y", "-q", package]
    ]
    for cmd in steps:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    _updated = True
    found = shutil.which(binary)
    if not found:
        raise RuntimeError(f"{package} installed but {binary} is not on PATH")
    return found


def ensure_packages(packages: list[str], *, binary: str) -> str:
    """Path of `binary`, installing Debian's `packages` (without recommends) when it is missing."""
    global _updated
    found = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if found:
        return found
    if os.geteuid() != 0:
        wanted = " ".join(packages)
        raise RuntimeError(f"{binary} is missing and installing it needs root: apt-get install {wanted}")
    print(f"[debian] installing {' '.join(packages)} ...", file=sys.stderr, flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    steps = ([] if _updated else [["apt-get", "update", "-q"]]) + [
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
    ]
    for cmd in steps:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    _updated = True
    found = shutil.which(binary, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if not found:
        raise RuntimeError(f"{' '.join(packages)} installed but {binary} is not on PATH")
    return found
