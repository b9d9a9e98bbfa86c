"""The rayfit job spec: pydantic sections with unknown keys forbidden and every problem reported at once."""

from cluster.spec.base import Problem, SpecError
from cluster.spec.compute import ClusterSpec
from cluster.spec.data import DataSpec, SourceSpec
from cluster.spec.evaluate import EvaluateSpec
from cluster.spec.job import JobSpec
from cluster.spec.load import load_spec, validate_spec
from cluster.spec.merge import MergeSpec
from cluster.spec.model import LoraSpec, ModelSpec, QuantizationSpec
from cluster.spec.output import OutputSpec
from cluster.spec.plan import PlanSpec
from cluster.spec.train import TrainSpec

__all__ = [
    "ClusterSpec",
    "DataSpec",
    "EvaluateSpec",
    "JobSpec",
    "LoraSpec",
    "MergeSpec",
    "ModelSpec",
    "OutputSpec",
    "PlanSpec",
    "Problem",
    "QuantizationSpec",
    "SourceSpec",
    "SpecError",
    "TrainSpec",
    "load_spec",
    "validate_spec",
]
