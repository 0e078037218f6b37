"""Static checks of the Dockerfile (there is no container engine in CI)."""
import os
import pathlib
import re
import shlex
import subprocess
import tomllib

import pytest

from conftest import REPO

CARGO = tomllib.loads((REPO / "Cargo.toml").read_text())
BIN = "elevate-sink"


def instructions():
    """(instruction, arguments) pairs, continuation lines joined, comments dropped."""
    text = (REPO / "Dockerfile").read_text()
    out, buf = [], ""
    for line in text.splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def stages():
    result, current = [], None
    for ins, args in instructions():
        if ins == "FROM":
            parts = args.split()
            current = {"from": parts[0], "name": parts[2] if len(parts) > 2 else None, "ins": []}
            result.append(current)
        elif current is not None:
            current["ins"].append((ins, args))
    return result


def test_bin_is_declared_in_cargo_toml():
    assert BIN in [b["name"] for b in CARGO["bin"]]


def test_copies_the_binary_cargo_build_release_makes():
    build, runtime = stages()[0], stages()[-1]
    workdir = [a for i, a in build["ins"] if i == "WORKDIR"][-1]
    runs = " ".join(a for i, a in build["ins"] if i == "RUN")
    assert "cargo build --release --locked" in runs
    assert not re.search(r"--target[ =]|--profile|CARGO_TARGET_DIR|CARGO_BUILD_TARGET", runs)
    assert not any(i == "ENV" and "CARGO_TARGET_DIR" in a for i, a in build["ins"])
    copies = [a.split() for i, a in runtime["ins"] if i == "COPY" and f"--from={build['name']}" in a]
    sources = {c[-2]: c[-1] for c in copies}
    expected = f"{workdir.rstrip('/')}/target/release/{BIN}"
    assert expected in sources, (expected, sources)
    assert sources[expected] == f"/usr/local/bin/{BIN}"


def test_dependency_layer_stubs_every_cargo_target():
    build = stages()[0]
    stub_run = next(a for i, a in build["ins"] if i == "RUN" and "fn main" in a)
    paths = [CARGO.get("lib", {}).get("path", "src/lib.rs")] + [b["path"] for b in CARGO["bin"]]
    for path in paths:
        assert path in stub_run, f"{path} (a target in Cargo.toml) has no stub in the dependency layer"


def members():
    """(directory, manifest) of every workspace member."""
    return [(m, tomllib.loads((REPO / m / "Cargo.toml").read_text())) for m in CARGO["workspace"]["members"]]


def test_dependency_layer_has_every_workspace_member_manifest_and_stubs():
    """Cargo reads every member's manifest, and refuses one whose targets have no source."""
    build = stages()[0]
    copies = [a.split() for i, a in build["ins"] if i == "COPY" and "--from" not in a]
    copied = {c[-2] for c in copies}
    stub_run = next(a for i, a in build["ins"] if i == "RUN" and "fn main" in a)
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    for member, manifest in members():
        assert f"{member}/Cargo.toml" in copied, f"{member}/Cargo.toml is not copied into the build stage"
        assert f"!{member}/Cargo.toml" in ignore, f".dockerignore drops {member}/Cargo.toml"
        lib = manifest.get("lib", {}).get("path", "src/lib.rs")
        for path in [lib] + [b["path"] for b in manifest.get("bin", [])]:
            assert f"{member}/{path}" in stub_run, f"{member}/{path} has no stub in the dependency layer"


def test_image_is_built_without_the_demo_feature():
    """The image is the service only: no `demo` command, no Elevate stand-in."""
    assert "demo" in CARGO["features"]["default"]
    build = stages()[0]
    builds = [a for i, a in build["ins"] if i == "RUN" and "cargo build" in a]
    assert builds
    for run in builds:
        for cmd in run.split("&&"):
            if "cargo build" in cmd:
                assert "--no-default-features" in cmd, cmd


def test_runtime_is_distroless_non_root():
    runtime = stages()[-1]
    assert runtime["from"].startswith("gcr.io/distroless/cc-debian12")
    users = [a for i, a in runtime["ins"] if i == "USER"]
    assert users and users[-1].split(":")[0] == "65532"


def test_builder_and_runtime_share_the_debian_release():
    build, runtime = stages()[0], stages()[-1]
    assert build["from"].startswith("rust:1.95-bookworm")
    assert "debian12" in runtime["from"]  # bookworm == Debian 12: same glibc and libssl3


def test_signal_port_entrypoint():
    runtime = dict(stages()[-1]["ins"])
    assert runtime["STOPSIGNAL"] == "SIGTERM"
    assert runtime["EXPOSE"] == "9090"
    assert runtime["ENTRYPOINT"] == f'["/usr/local/bin/{BIN}"]'
    assert runtime["CMD"] == '["run", "--config", "/etc/elevate-sink/config.toml"]'


def test_dockerignore_keeps_the_build_inputs():
    lines = [l.strip() for l in (REPO / ".dockerignore").read_text().splitlines()
             if l.strip() and not l.startswith("#")]
    assert lines[0] == "*"
    for needed in ("!Cargo.toml", "!Cargo.lock", "!src/"):
        assert needed in lines


ALLOWED_NEEDED = {"libc.so.6", "libm.so.6", "libgcc_s.so.1", "libssl.so.3", "libcrypto.so.3", "libz.so.1",
                  "libpthread.so.0", "libdl.so.2", "librt.so.1", "ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1"}


def test_binary_links_only_what_the_runtime_image_has():
    candidates = [REPO / "target" / "release" / BIN, REPO / "target" / "debug" / BIN]
    binary = next((p for p in candidates if p.exists()), None)
    if binary is None:
        pytest.skip("target/{release,debug}/elevate-sink not built")
    out = subprocess.run(["readelf", "-d", str(binary)], capture_output=True, text=True, check=True).stdout
    needed = set(re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", out))
    assert needed <= ALLOWED_NEEDED, f"not in distroless/cc-debian12 (or copied in): {needed - ALLOWED_NEEDED}"
