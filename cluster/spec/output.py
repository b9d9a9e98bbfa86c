"""The `output` section: where checkpoints, exports and reports are written."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from cluster.spec.base import Section


class OutputSpec(Section):
    """Storage and run naming."""

    storage: str = Field(
        "~/rayfit-runs",
        description="Where runs are written: a local or shared-filesystem path, or an s3://, gs:// or file:// URI. "
        "A relative path is resolved where the job runs (under `ray job submit --working-dir`, inside Ray's copy of it), "
        "so use ~/..., an absolute path or a URI. A multi-node cluster needs shared storage (a URI or an NFS mount).",
    )
    name: str = Field(description="Run name; a run with the same name resumes instead of starting over.")

    @field_validator("name")
    @classmethod
    def _slug(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", v):
            raise ValueError("run name must be 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit")
        return v
