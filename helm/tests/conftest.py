"""Shared fixtures: render the chart with the helm binary that .ci/chart-check built."""
import os
import pathlib
import subprocess

import pytest
import yaml

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent.parent
CHART = REPO / "helm" / "elevate-sink"
ALL_FEATURES = CHART / "ci" / "all-features-values.yaml"
HELM = os.environ.get("HELM", "helm")
KUBE_VERSION = os.environ.get("KUBE_VERSION", "1.30.0")


def helm_template(*args, check=True):
    cmd = [HELM, "template", "t", str(CHART), "--namespace", "shop", "--kube-version", KUBE_VERSION, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    return proc


def render(*args):
    docs = [d for d in yaml.safe_load_all(helm_template(*args).stdout) if d]
    return docs


def by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


@pytest.fixture(scope="session")
def default_docs():
    return render()


@pytest.fixture(scope="session")
def all_docs():
    return render("-f", str(ALL_FEATURES))


@pytest.fixture(scope="session", params=["default", "all-features"])
def docs(request):
    if request.param == "default":
        return render()
    return render("-f", str(ALL_FEATURES))
