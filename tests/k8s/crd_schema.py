"""Check custom resources against a CRD's openAPIV3Schema with jsonschema, as strictly as the kube-apiserver.

The apiserver prunes unknown fields silently, so a typo like `rayStartParam` would vanish at apply time; here an
unknown field is an error. Kubernetes extensions are translated into plain JSON Schema:
`nullable`, `x-kubernetes-int-or-string`, `x-kubernetes-preserve-unknown-fields`.
"""

from __future__ import annotations

from pathlib import Path

import jsonschema
import yaml


def strict_schema(node):
    """A copy of a structural schema in which objects with `properties` forbid other keys."""
    if isinstance(node, list):
        return [strict_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {
        k: strict_schema(v) if k in ("properties", "items", "additionalProperties", "anyOf", "allOf", "oneOf", "not") else v
        for k, v in node.items()
        if not k.startswith("x-kubernetes-") and k != "nullable"
    }
    if "properties" in out:
        out["properties"] = {k: strict_schema(v) for k, v in node["properties"].items()}
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if "properties" in node and "additionalProperties" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def load_crd_validators(crd_dir: Path) -> dict[tuple[str, str], jsonschema.protocols.Validator]:
    """Validators by (apiVersion, kind) for every served version of every CRD in `crd_dir`."""
    out = {}
    for path in sorted(crd_dir.glob("*.yaml")):
        crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # the CRDs are 4 MB
        if not isinstance(crd, dict) or crd.get("kind") != "CustomResourceDefinition":
            continue
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served"):
                schema = strict_schema(version["schema"]["openAPIV3Schema"])
                out[(f"{group}/{version['name']}", kind)] = jsonschema.Draft7Validator(schema)
    return out


def crd_errors(validators: dict, obj: dict) -> list[str]:
    """Every schema violation of one custom resource, each as 'path: message'."""
    validator = validators[(obj["apiVersion"], obj["kind"])]
    errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
    return [f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in errors]
