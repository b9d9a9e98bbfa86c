"""k8s/overlays/service: the fine-tuning service on KubeRay. Beyond the checks every build gets (test_manifests.py:
CRD schemas, the real builder, non-root pods), its app keeps state on object storage, takes every key from a Secret
by reference, and its RayCluster can run the template's job next to the engine."""

from __future__ import annotations

from pathlib import Path

import yaml

from cluster.spec import load_spec
from cluster.storage import is_remote
from serve.args import parse_args
from tests.k8s.test_manifests import IMAGE_ROOT, REPO, build_serve_config, pod_templates, render

BUILD = "overlays/service"


def service_and_args(tmp_path):
    [service] = [o for o in render(BUILD) if o["kind"] == "RayService"]
    [args] = build_serve_config(yaml.safe_load(service["spec"]["serveConfigV2"]), tmp_path)
    return service, args


def test_the_app_serves_the_fine_tuning_api_with_state_on_object_storage(tmp_path):
    service, args = service_and_args(tmp_path)
    assert args.storage and is_remote(args.storage) and args.storage.startswith("s3://")
    assert args.api_keys, "without keys the service refuses any interface but loopback"
    assert list(args.finetune.bases) == [args.base_name()]
    assert service["spec"]["upgradeStrategy"] == {"type": "None"}  # a cluster swap would drop running jobs
    # Jobs reach the job server through the head service KubeRay names after the RayService.
    assert args.finetune.ray_address == f"http://{service['metadata']['name']}-head-svc:8265"


def test_every_key_comes_from_a_secret_by_reference_in_every_pod(tmp_path):
    service, args = service_and_args(tmp_path)
    names = {k.env for k in args.api_keys}
    assert len(names) == len(args.api_keys) and all(names)
    assert len({k.tenant_name() for k in args.api_keys}) == len(args.api_keys)  # one tenant per key here
    for template in pod_templates(service):  # an engine replica may land on any node
        env = {e["name"]: e for e in template["spec"]["containers"][0].get("env", [])}
        for name in names:
            assert "value" not in env[name], name
            assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "rayfit-api-keys"


def test_the_template_job_fits_beside_the_engine(tmp_path):
    service, args = service_and_args(tmp_path)
    [template_path] = args.finetune.bases.values()
    spec = load_spec(REPO / Path(template_path).relative_to(IMAGE_ROOT))
    cluster = service["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    gpus = sum(
        g["maxReplicas"] * int(g["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu", 0))
        for g in cluster["workerGroupSpecs"]
    )
    engines = (args.autoscaling.max_replicas if args.autoscaling else args.num_replicas or 1) * args.num_gpus
    jobs = spec.cluster.num_workers * spec.cluster.gpus_per_worker
    assert gpus >= engines + jobs, f"{gpus} GPUs at most, {engines} for engines + {jobs} for one job"
    head_cpus = float(cluster["headGroupSpec"]["rayStartParams"]["num-cpus"])
    assert head_cpus >= args.finetune.entrypoint_num_cpus  # the job drivers fit on the head
    assert parse_args(args.model_dump()).storage == args.storage  # the args round-trip as the replicas re-read them
