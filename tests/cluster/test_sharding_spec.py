"""`cluster.sharding`: the backends, the deprecated `cluster.deepspeed` spelling, and the combinations refused by name."""

from __future__ import annotations

import subprocess
import sys
import typing

import pytest

from cluster.sharding import SHARDINGS
from cluster.spec import ClusterSpec, SpecError, validate_spec
from cluster.spec.base import SpecDeprecation
from tests.conftest import REPO


def _spec(**cluster) -> dict:
    return {
        "model": {"base": "meta-llama/Llama-3.1-8B-Instruct", "method": "qlora"},
        "data": {"train": [{"path": "train.jsonl"}]},
        "cluster": cluster,
        "output": {"name": "s"},
    }


def test_the_spec_offers_every_backend_of_the_registry():
    assert set(typing.get_args(ClusterSpec.model_fields["sharding"].annotation)) == set(SHARDINGS)
    assert validate_spec(_spec()).cluster.sharding == "ddp"


@pytest.mark.parametrize(("old", "new"), [("none", "ddp"), ("zero2", "deepspeed_zero2"), ("zero3", "deepspeed_zero3")])
def test_the_old_deepspeed_spelling_still_works_with_a_warning_naming_the_new_one(old, new):
    with pytest.warns(SpecDeprecation, match=rf"cluster\.deepspeed: {old} is deprecated; write cluster\.sharding: {new}"):
        spec = validate_spec(_spec(deepspeed=old))
    assert spec.cluster.sharding == new
    assert spec.model_dump(exclude_unset=True)["cluster"] == {"sharding": new}  # what crosses to the workers


@pytest.mark.parametrize("bad", [[], {"stage": 3}, "zero4"])
def test_an_old_spelling_that_is_no_stage_is_named(bad):
    with pytest.raises(SpecError, match=r"cluster\.deepspeed: .*Fix: "):
        validate_spec(_spec(deepspeed=bad))


def test_fsdp2_together_with_deepspeed_is_a_named_error():
    with pytest.raises(SpecError) as e:
        validate_spec(_spec(sharding="fsdp2", deepspeed="zero3"))
    assert str(e.value) == (
        "cluster.deepspeed: FSDP2 and DeepSpeed cannot both shard one model: cluster.sharding is fsdp2 and "
        "cluster.deepspeed is zero3. Fix: keep one: cluster.sharding: fsdp2 or cluster.sharding: deepspeed_zero3, and "
        "remove cluster.deepspeed (its deprecated spelling)."
    )


@pytest.mark.parametrize(
    ("cluster", "field", "says"),
    [
        ({"sharding": "fsdp2", "offload_optimizer": True}, "cluster.offload_optimizer", "FSDP2's CPU offload keeps"),
        ({"sharding": "deepspeed_zero2", "offload_params": True}, "cluster.offload_params", "needs sharded weights"),
        ({"offload_optimizer": True}, "cluster.offload_optimizer", "needs sharded optimizer states"),
    ],
)
def test_offload_the_backend_cannot_do_is_named(cluster, field, says):
    with pytest.raises(SpecError, match=rf"{field}: .*{says}"):
        validate_spec(_spec(**cluster))


def test_fsdp2_refuses_what_it_does_not_run_yet_by_name():
    dpo = _spec(sharding="fsdp2")
    dpo["train"] = {"objective": "dpo"}
    with pytest.raises(SpecError, match=r"cluster\.sharding: fsdp2 runs objective sft.*Fix: use cluster\.sharding"):
        validate_spec(dpo)
    warm = _spec(sharding="fsdp2")
    warm["model"]["init_from"] = "/runs/earlier"
    with pytest.raises(SpecError, match=r"model\.init_from: fsdp2 shards the adapters with the layers"):
        validate_spec(warm)


def test_the_cli_prints_the_deprecation_as_one_line(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text(
        "model:\n  base: meta-llama/Llama-3.1-8B-Instruct\ndata:\n  train:\n    - path: t.jsonl\n"
        "cluster:\n  deepspeed: zero3\noutput:\n  name: old\n"
    )
    r = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "validate", str(path)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    assert "rayfit: warning: cluster.deepspeed: zero3 is deprecated; write cluster.sharding: deepspeed_zero3" in r.stderr
    assert "Traceback" not in r.stderr and "sharding: deepspeed_zero3" in r.stdout


def test_resubmitting_a_run_with_another_backend_is_refused_by_name(tmp_path):
    from cluster.errors import UserError
    from cluster.training.run_record import check_same_run, write_run_record

    def spec(sharding: str):
        data = {**_spec(sharding=sharding), "output": {"name": "moved", "storage": str(tmp_path)}}
        return validate_spec(data)

    write_run_record(spec("deepspeed_zero3"), "failed")
    assert check_same_run(spec("deepspeed_zero3"))["status"] == "failed"  # the same backend continues
    with pytest.raises(UserError, match=r"trained with cluster.sharding deepspeed_zero3, whose resume state .* fsdp2"):
        check_same_run(spec("fsdp2"))
