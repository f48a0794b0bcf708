"""deploy/kubernetes/ and the Dockerfile: valid for a current Kubernetes, and holding to the server's
own rules (probes on the right endpoints and ports, a grace period Kubernetes waits out).

No container runtime or cluster runs here (see docs/scaling.md): these checks are what can be run.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT
from tests.doc_commands import code_blocks

MANIFESTS = sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml"))
DOC = (ROOT / "docs" / "scaling.md").read_text()


def validate(*paths: Path) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "kubernetes_validate", "--strict", "--kubernetes-version", "1.37.0"]
    return subprocess.run([*argv, *map(str, paths)], capture_output=True, text=True)


def resources(path: Path) -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(path.read_text())}


def option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_the_documented_validation_passes() -> None:
    command = next(c for c in code_blocks(DOC, "bash") if "kubernetes_validate" in c).strip()
    argv = shlex.split(command)
    assert argv[0] == "python"
    done = subprocess.run([sys.executable, *argv[1:]], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert [p.name for p in MANIFESTS] == ["llm.yaml", "serve.yaml"]
    assert all(f"deploy/kubernetes/{p.name}" in argv for p in MANIFESTS)


def test_the_validation_catches_a_misspelt_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(MANIFESTS[0].read_text().replace("readinessProbe:", "readynessProbe:"))
    done = validate(bad)
    assert done.returncode != 0
    assert "readynessProbe" in done.stdout + done.stderr


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_probes_grace_period_ports_and_autoscaler_fit_the_server(path: Path) -> None:
    kinds = resources(path)
    assert set(kinds) == {"Deployment", "Service", "HorizontalPodAutoscaler"}
    deployment, service, hpa = kinds["Deployment"], kinds["Service"], kinds["HorizontalPodAutoscaler"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = container["args"]
    assert args[0] in ("serve", "llm")
    http_port = int(option(args, "--http-port" if args[0] == "serve" else "--port"))
    grpc_port = int(option(args, "--port" if args[0] == "serve" else "--grpc-port"))
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": http_port, "grpc": grpc_port}

    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert container["startupProbe"]["grpc"] == {"port": grpc_port}

    pause = float(container["lifecycle"]["preStop"]["exec"]["command"][1])
    grace = float(option(args, "--grace-period"))
    assert pod["terminationGracePeriodSeconds"] >= pause + grace + 5  # Kubernetes' SIGKILL comes after ours

    for kind in ("requests", "limits"):
        assert set(container["resources"][kind]) == {"cpu", "memory"}
    assert {p["name"]: p["targetPort"] for p in service["spec"]["ports"]} == {"http": "http", "grpc": "grpc"}
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"] == labels == deployment["spec"]["selector"]["matchLabels"]
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])


def test_the_manifests_run_commands_blaze_has() -> None:
    from typer.testing import CliRunner

    from blazerpc.cli import cli

    for path in MANIFESTS:
        args = resources(path)["Deployment"]["spec"]["template"]["spec"]["containers"][0]["args"]
        done = CliRunner().invoke(cli, [*args, "--help"])
        assert done.exit_code == 0, (path.name, done.output)


def test_the_image_is_built_by_the_readme_set_up() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "RUN make setup" in dockerfile
    assert "\nsetup: " in (ROOT / "Makefile").read_text()  # what `make serve` and `make test` run first
    assert 'ENTRYPOINT ["blaze"]' in dockerfile
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored  # the image makes its own
