"""Secrets in the environment never reach anything a job writes: its run folder, Ray's session logs, or its own log."""

from __future__ import annotations

from pathlib import Path

# Fake values shaped like the real thing; each is unique enough that finding it anywhere means it leaked.
SECRETS = {
    "HF_TOKEN": "hf_FAKEfakeFAKE1234567890leakcheck",
    "AWS_SECRET_ACCESS_KEY": "FAKEawsSECRETkey/0123456789+leakcheck",
    "OPENAI_API_KEY": "sk-FAKEopenaiKEY0123456789leakcheck",
    "RAYFIT_API_KEY": "rf-FAKEtenantKEY0123456789leakcheck",
    "MLFLOW_TRACKING_TOKEN": "mlflowFAKEtoken0123456789leakcheck",
}


def files_holding(root: Path, needles: dict[str, bytes]) -> list[str]:
    """'path: NAME' for every file under `root` that contains a needle's value (read in full: these runs are small)."""
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                data = path.read_bytes()
            except OSError:  # sockets and files Ray removes while we read
                continue
            hits += [f"{path}: {name}" for name, value in needles.items() if value in data]
    return hits


def test_the_search_finds_a_planted_value(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "log.txt").write_bytes(b"...token=" + SECRETS["HF_TOKEN"].encode() + b"\n")
    assert files_holding(tmp_path, {"HF_TOKEN": SECRETS["HF_TOKEN"].encode()}) == [f"{tmp_path}/a/b/log.txt: HF_TOKEN"]


# The whole job searched for leaks: tests/jobs/test_finetune.py::test_the_job_writes_no_secret_anywhere (its
# end-to-end run, with these values in its environment).
