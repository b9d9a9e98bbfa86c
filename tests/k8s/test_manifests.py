"""Every kustomize build of k8s/ checked as a cluster would: KubeRay kinds against the v1.7.0 CRD schemas (unknown
fields rejected), built-in kinds with kubernetes-validate, and the specs, Ray config and shapes they carry."""

from __future__ import annotations

import copy
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import ray
import yaml

from cluster.spec import load_spec
from cluster.storage import shared_storage_problems
from tests.k8s.crd_schema import crd_errors, load_crd_validators

REPO = Path(__file__).resolve().parents[2]
CRD_DIR = Path(os.environ.get("RAYFIT_KUBERAY_CRDS", REPO.parent / "shared" / "kuberay-crds"))
BUILDS = ["base", "overlays/dev-cpu", "overlays/gpu-70b", "overlays/service"]
KINDS = {"overlays/service": {"RayService"}}  # the service submits its jobs itself: no RayJob, no standalone RayCluster
K8S_VERSION = "1.33"
IMAGE_ROOT = "/home/ray/rayfit"  # WORKDIR of the Dockerfile: where the repo lives in the image


def render(build: str) -> list[dict]:
    """The objects `kubectl kustomize k8s/<build>` prints."""
    if not shutil.which("kubectl"):
        pytest.skip("kubectl is not installed; it renders the kustomize builds")
    out = subprocess.run(["kubectl", "kustomize", str(REPO / "k8s" / build)], capture_output=True, text=True, check=True)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="module")
def validators():
    if not CRD_DIR.is_dir():
        pytest.skip(
            f"KubeRay CRDs not found at {CRD_DIR} (expected the v1.7.0 ray.io_*.yaml files of KubeRay's "
            "config/crd/bases/ there); set RAYFIT_KUBERAY_CRDS to the folder holding them (docs/deploy.md)"
        )
    return load_crd_validators(CRD_DIR)


@pytest.fixture(scope="module")
def builds() -> dict[str, list[dict]]:
    return {b: render(b) for b in BUILDS}


def ray_clusters(obj: dict) -> list[dict]:
    """The RayCluster specs inside a RayCluster, RayJob or RayService."""
    return {
        "RayCluster": lambda: [obj["spec"]],
        "RayJob": lambda: [obj["spec"]["rayClusterSpec"]],
        "RayService": lambda: [obj["spec"]["rayClusterConfig"]],
    }.get(obj["kind"], list)()


def pod_templates(obj: dict) -> list[dict]:
    """Every pod template of an object: head, worker groups, and a RayJob's submitter."""
    out = [g["template"] for c in ray_clusters(obj) for g in [c["headGroupSpec"], *c.get("workerGroupSpecs", [])]]
    if obj["kind"] == "RayJob" and "submitterPodTemplate" in obj["spec"]:
        out.append(obj["spec"]["submitterPodTemplate"])
    return out


@pytest.mark.parametrize("build", BUILDS)
def test_kuberay_objects_match_the_crd_schemas(build, builds, validators):
    objs = [o for o in builds[build] if o["apiVersion"].startswith("ray.io/")]
    assert {o["kind"] for o in objs} == KINDS.get(build, {"RayCluster", "RayJob", "RayService"})
    for obj in objs:
        assert obj["apiVersion"] == "ray.io/v1"
        assert crd_errors(validators, obj) == [], f"{build}: {obj['kind']}/{obj['metadata']['name']}"


@pytest.mark.parametrize("build", BUILDS)
def test_builtin_kinds_match_the_kubernetes_schemas(build, builds):
    objs = [o for o in builds[build] if not o["apiVersion"].startswith("ray.io/")]
    assert any(o["kind"] == "ServiceAccount" for o in objs)
    for obj in objs:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_a_broken_field_fails_validation(builds, validators):
    cluster = next(o for o in builds["base"] if o["kind"] == "RayCluster")
    assert crd_errors(validators, cluster) == []
    broken = copy.deepcopy(cluster)
    head = broken["spec"]["headGroupSpec"]
    head["rayStartParam"] = head.pop("rayStartParams")  # a typo the apiserver would silently prune
    broken["spec"]["workerGroupSpecs"][0]["replicas"] = "two"  # wrong type
    head["template"]["spec"]["containers"][0]["imagePullPolicy"] = 3  # wrong type in the embedded pod schema
    broken["spec"]["workerGroupSpecs"][0]["rayStartParams"]["num-gpus"] = 1  # rayStartParams values are strings
    errors = crd_errors(validators, broken)
    assert len(errors) == 4, errors
    assert any(e.startswith("spec.headGroupSpec:") and "'rayStartParam' was unexpected" in e for e in errors)
    assert any(e.startswith("spec.workerGroupSpecs.0.replicas:") for e in errors)
    assert any(e.startswith("spec.headGroupSpec.template.spec.containers.0.imagePullPolicy:") for e in errors)
    assert any(e.startswith("spec.workerGroupSpecs.0.rayStartParams.num-gpus:") for e in errors)

    pvc = copy.deepcopy(next(o for o in builds["overlays/dev-cpu"] if o["kind"] == "PersistentVolumeClaim"))
    pvc["spec"]["accessMode"] = pvc["spec"].pop("accessModes")
    with pytest.raises(kubernetes_validate.ValidationError, match="'accessMode' was unexpected"):
        kubernetes_validate.validate(pvc, K8S_VERSION, strict=True)


def test_int_or_string_and_nullable_are_honoured(validators):
    base = {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {"name": "x"},
        "spec": {"entrypoint": "python -V", "clusterSelector": {"ray.io/cluster": "rayfit"}},
    }
    assert crd_errors(validators, base) == []
    job = copy.deepcopy(base)
    job["spec"]["submitterPodTemplate"] = {
        "spec": {"containers": [{"name": "s", "image": "i", "resources": {"limits": {"cpu": 1, "memory": "1Gi"}}}]}
    }
    assert crd_errors(validators, job) == []  # quantities: integer or string
    job["spec"]["submitterPodTemplate"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = [1]
    assert len(crd_errors(validators, job)) == 1


@pytest.mark.parametrize("build", BUILDS)
def test_rayjob_entrypoints_run_a_valid_spec_that_fits_the_cluster(build, builds):
    for job in (o for o in builds[build] if o["kind"] == "RayJob"):
        argv = shlex.split(job["spec"]["entrypoint"])
        assert argv[:3] == ["python", "-m", "jobs.finetune"], argv
        spec_path = REPO / Path(argv[3]).relative_to(IMAGE_ROOT)
        spec = load_spec(spec_path)
        cluster = job["spec"]["rayClusterSpec"]
        head, workers = cluster["headGroupSpec"], cluster.get("workerGroupSpecs", [])
        cpus = float(head["rayStartParams"].get("num-cpus", 0))
        gpus, nodes = 0.0, 1
        for g in workers:
            limits = g["template"]["spec"]["containers"][0]["resources"]["limits"]
            cpus += g["replicas"] * float(limits["cpu"])
            gpus += g["replicas"] * float(limits.get("nvidia.com/gpu", 0))
            nodes += g["replicas"]
        need = spec.cluster.num_workers
        assert cpus >= need * spec.cluster.cpus_per_worker, f"{build}: {job['metadata']['name']} has {cpus} CPUs"
        assert gpus >= need * spec.cluster.gpus_per_worker, f"{build}: {job['metadata']['name']} has {gpus} GPUs"
        assert shared_storage_problems(spec.output.storage, nodes) == []
        runtime_env = ray.runtime_env.RuntimeEnv(**yaml.safe_load(job["spec"]["runtimeEnvYAML"]))
        assert runtime_env["env_vars"]["RAY_TRAIN_ENABLE_PRINT_PATCH"] == "0"
        assert job["spec"]["shutdownAfterJobFinishes"] is True
        assert job["spec"]["ttlSecondsAfterFinished"] > 0 and job["spec"]["backoffLimit"] >= 1


def build_serve_config(config: dict, model_dir: Path) -> list:
    """Each application of a Serve config through Ray's schema and the real `serve.app:build_app` (validation,
    deployment options, and our args as vLLM's own AsyncEngineArgs); nothing starts."""
    from ray.serve import Application
    from ray.serve.schema import ServeDeploySchema
    from vllm.engine.arg_utils import AsyncEngineArgs

    from serve.app import build_app
    from serve.args import parse_args
    from serve.vllm_config import vllm_namespace

    apps = []
    for app in ServeDeploySchema.model_validate(config).applications:
        assert app.import_path == "serve.app:build_app"
        assert isinstance(build_app(app.args), Application)
        args = parse_args(app.args)
        AsyncEngineArgs.from_cli_args(vllm_namespace(args, str(model_dir), {}))
        apps.append(args)
    return apps


@pytest.mark.parametrize("build", BUILDS)
def test_rayservice_serve_config_goes_through_the_real_builder(build, builds, tmp_path):
    service = next(o for o in builds[build] if o["kind"] == "RayService")
    [args] = build_serve_config(yaml.safe_load(service["spec"]["serveConfigV2"]), tmp_path)
    for template in pod_templates(service):  # keys: a Secret mounted, or set by secretKeyRef, in every pod
        container = template["spec"]["containers"][0]
        mounts = [m["mountPath"] for m in container.get("volumeMounts", [])]
        from_secrets = {e["name"] for e in container.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}
        for key in args.api_keys:
            assert (key.file and any(key.file.startswith(m + "/") for m in mounts)) or key.env in from_secrets, key
    gpus = [
        g["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu", "0")
        for g in service["spec"]["rayClusterConfig"].get("workerGroupSpecs", [])
    ]
    need = args.vllm.tensor_parallel_size if args.vllm.tensor_parallel_size > 1 else args.num_gpus
    assert max([int(g) for g in gpus], default=0) >= need, build  # one replica fits on one GPU node


@pytest.mark.parametrize("path", sorted((REPO / "serve" / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_serve_configs_go_through_the_real_builder(path, tmp_path):
    assert build_serve_config(yaml.safe_load(path.read_text()), tmp_path)


@pytest.mark.parametrize("build", BUILDS)
def test_pods_are_non_root_bounded_and_get_secrets_by_reference(build, builds):
    for obj in (o for o in builds[build] if o["apiVersion"].startswith("ray.io/")):
        where = f"{build}: {obj['kind']}/{obj['metadata']['name']}"
        for c in ray_clusters(obj):
            assert c["rayVersion"] == ray.__version__, where
            assert c["headGroupSpec"]["serviceType"] == "ClusterIP", where  # the dashboard stays inside the cluster
        for template in pod_templates(obj):
            pod = template["spec"]
            assert pod["serviceAccountName"] == "rayfit", where
            assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0, where
            for container in pod["containers"]:
                assert container["securityContext"]["allowPrivilegeEscalation"] is False, where
                assert container["securityContext"]["capabilities"]["drop"] == ["ALL"], where
                resources = container["resources"]
                assert set(resources["requests"]) <= set(resources["limits"]) and resources["limits"], where
                assert not any(e.get("value") and re.search("TOKEN|SECRET|KEY", e["name"]) for e in container.get("env", [])), (
                    where
                )
                if container["name"] != "ray-job-submitter":
                    refs = {r["secretRef"]["name"] for r in container.get("envFrom", [])}
                    assert refs == {"rayfit-hf-token", "rayfit-object-store"}, where
                    assert container["workingDir"] == IMAGE_ROOT, where
    assert not any(o["kind"] == "Service" and o["spec"].get("type") in ("LoadBalancer", "NodePort") for o in builds[build])


def test_dockerfile_builds_from_the_matching_ray_image():
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM rayproject/ray:\$\{RAY_VERSION\}-", text, re.M)
    assert re.search(r"^ARG RAY_VERSION=(\S+)$", text, re.M).group(1) == ray.__version__
    assert re.search(r"^WORKDIR (\S+)$", text, re.M).group(1) == IMAGE_ROOT
    assert ".venv" in (REPO / ".dockerignore").read_text().split()


@pytest.mark.parametrize("build", BUILDS)
def test_kuberay_services_do_not_collide(build, builds):
    # KubeRay names a RayCluster's and a RayService's head service `<name>-head-svc`; equal names would fight over it.
    names = [o["metadata"]["name"] for o in builds[build] if o["kind"] in ("RayCluster", "RayService")]
    assert len(names) == len(set(names)), names
