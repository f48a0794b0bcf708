"""``BlazeDeployment`` and ``ReplicaConfig``: the Python API of docs/scaling.md, its example run on Ray."""

from __future__ import annotations

import subprocess
import sys

import pytest

from blazerpc import BlazeApp, ServeConfig
from blazerpc.ray_serve import BlazeDeployment, ReplicaConfig
from blazerpc.ray_serve.deployment import app_reference
from examples.replicas import app
from tests.conftest import ROOT, free_port
from tests.doc_commands import code_blocks

DOC = (ROOT / "docs" / "scaling.md").read_text()


def test_replica_config_is_ray_serves_deployment_options() -> None:
    assert ReplicaConfig(count=3, num_cpus=0.5).deployment_options() == {
        "ray_actor_options": {"num_cpus": 0.5},
        "max_ongoing_requests": 100,
        "health_check_period_s": 10.0,
        "num_replicas": 3,
    }
    autoscaled = ReplicaConfig(min_count=1, max_count=4, target_ongoing_requests=8).deployment_options()
    assert "num_replicas" not in autoscaled
    assert autoscaled["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 8}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"count": 0}, "count must be >= 1"),
        ({"min_count": 1}, "needs both min_count and max_count"),
        ({"min_count": 3, "max_count": 2}, "min_count <= max_count"),
        ({"num_cpus": -1}, "num_cpus must be >= 0"),
    ],
)
def test_replica_config_refuses_what_ray_would_refuse_later(options: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ReplicaConfig(**options)


def test_a_module_level_app_is_found_by_reference_and_a_local_one_refused() -> None:
    assert app_reference(app) == "examples.replicas:app"
    with pytest.raises(ValueError, match="define it at module level"):
        app_reference(BlazeApp("nowhere"))


def test_proxy_owned_options_are_refused() -> None:
    with pytest.raises(ValueError, match="metrics port"):
        BlazeDeployment(app, config=ServeConfig(metrics_port=9100))


@pytest.mark.timeout(240)
def test_the_documented_python_example_runs_on_ray() -> None:
    example = code_blocks(DOC, "python")[0]
    example = example.replace("8000", str(free_port())).replace("50051", str(free_port()))
    done = subprocess.run([sys.executable, "-c", example], cwd=ROOT, capture_output=True, text=True, timeout=200)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 replicas answered" in done.stdout.splitlines()  # among Ray's lines
