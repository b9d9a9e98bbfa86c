"""A folder of links to the packages the GPU machine will have: its own plus fetch.sh's, from this environment.

    python benchmarks/gpu/box_env.py /tmp/box/site-packages
    HF_HUB_OFFLINE=1 PYTHONPATH=/tmp/box/site-packages:$PWD python -S -m benchmarks.gpu --smoke

With `-S` nothing else is importable, so a package missing from fetch.sh's list fails here, not on the GPU machine.
The folder is named site-packages because dill (datasets' fingerprints) pickles modules outside such a folder by
value. Add names as a comma-separated second argument (e.g. httpx2 when this environment's huggingface-hub needs it).
"""

from __future__ import annotations

import re
import sys
import sysconfig
from pathlib import Path

# The machine: torch 2.11 and its dependencies, transformers 5.17 and its dependencies, peft, accelerate, pytest.
MACHINE = """torch torchgen functorch filelock typing_extensions sympy mpmath networkx jinja2 markupsafe fsspec setuptools
pkg_resources _distutils_hack triton transformers huggingface_hub hf_xet numpy numpy.libs packaging yaml _yaml pyyaml regex
tokenizers safetensors tqdm httpx httpcore h11 anyio sniffio idna certifi typer typer_slim click shellingham rich
markdown_it markdown_it_py mdurl pygments peft accelerate psutil pytest _pytest pluggy iniconfig py requests urllib3
charset_normalizer""".split()
# fetch.sh's wheels, by import name.
CARRIED = """trl bitsandbytes liger_kernel datasets pyarrow pandas dill multiprocess _multiprocess xxhash dateutil
python_dateutil six pydantic pydantic_core annotated_types typing_inspection matplotlib mpl_toolkits pylab pil pillow
fonttools kiwisolver contourpy cycler pyparsing""".split()


def main() -> None:
    """Link every allowed top-level entry of this environment's site-packages into the folder given."""
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    allowed = {*MACHINE, *CARRIED, *(sys.argv[2].split(",") if len(sys.argv) > 2 else [])}
    site = Path(sysconfig.get_paths()["purelib"])
    for entry in site.iterdir():
        key = re.sub(r"-[0-9].*\.dist-info$", "", entry.name).replace("-", "_").lower()
        key = re.sub(r"\.py$", "", key).split(".cpython")[0]
        if (key in allowed or key.removesuffix(".libs") in allowed) and not (out / entry.name).exists():
            (out / entry.name).symlink_to(entry)
    print(f"{len(list(out.iterdir()))} entries in {out}")


if __name__ == "__main__":
    main()
