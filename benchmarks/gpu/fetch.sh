#!/usr/bin/env bash
# Build benchmarks/gpu/wheelhouse/site.tar.xz: the packages the GPU machine lacks, installed for its Python 3.12 and
# packed small enough to travel with the working tree (64 MiB). Run it on any Linux machine with pip and PyPI access:
#
#   bash benchmarks/gpu/fetch.sh            # about 3 minutes; prints the sizes
#
# The wheels themselves do not fit (pyarrow 55 MB + bitsandbytes 43 MB), so they are installed into a folder for
# cp312/manylinux x86_64 and what the benchmark never loads is dropped: bitsandbytes' libraries for CUDA versions
# other than 13.0 (the machine's torch is cu130), pyarrow's Flight and S3 libraries, headers and tests, pandas' tests.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/wheelhouse"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python=${PYTHON:-python3}

# Exactly what the machine lacks (it has torch 2.11, transformers 5.17, peft, accelerate, safetensors, numpy,
# pyyaml, fsspec, filelock, jinja2, triton, huggingface-hub). Found by running --smoke with only those packages
# importable (README.md): TRL needs datasets (pyarrow, pandas, dill, multiprocess, xxhash, python-dateutil, six);
# rayfit's spec needs pydantic (pydantic-core, annotated-types, typing-inspection, a newer typing-extensions);
# train_loop draws the loss curve at the end with matplotlib (pillow, fonttools, kiwisolver, contourpy, cycler,
# pyparsing).
WHEELS=(trl==1.16.0 bitsandbytes==0.50.2 liger-kernel==0.8.5
        datasets==5.2.0 pyarrow==26.0.1 pandas==3.1.1 dill==0.4.1 multiprocess==0.70.19 xxhash==4.1.0
        python-dateutil==2.9.0.post0 six==1.17.0
        pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0
        matplotlib==3.11.2 pillow==13.0.0 fonttools==4.68.0 kiwisolver==1.5.1 contourpy==1.3.3 cycler==0.12.1
        pyparsing==3.3.3)
# DeepSpeed (the qlora-rayfit+zero3 case) is published as a source archive only: its pure-Python wheel is built here
# (no ops compiled; on one GPU with the Trainer's AdamW none is needed), with the packages it imports.
WHEELS+=(hjson==3.1.0 py-cpuinfo==9.0.0 msgpack==1.2.4 einops==0.8.2 ninja==1.13.2 psutil==7.2.2)
DS_BUILD_OPS=0 "$python" -m pip wheel -q --no-deps --no-build-isolation deepspeed==0.19.8 -w "$tmp/wheels"
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$tmp/wheels" "${WHEELS[@]}"
ls -l "$tmp/wheels" | awk 'NR > 1 {printf "%8.1f MB  %s\n", $5 / 1e6, $9}'
du -cb "$tmp"/wheels/*.whl | tail -1 | awk '{printf "%8.1f MB  all wheels\n", $1 / 1e6}'
"$python" -m pip install -q --no-deps --no-compile --target "$tmp/site" "$tmp"/wheels/*.whl \
  --python-version 3.12 --implementation cp --only-binary=:all: \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64
cd "$tmp/site"
find bitsandbytes -name 'libbitsandbytes_*.so' ! -name '*cuda130*' ! -name '*cpu*' -delete
# libarrow_substrait stays: pyarrow's core library links it.
rm -rf bin pandas/tests pyarrow/tests pyarrow/include pyarrow/src pyarrow/libarrow_flight* pyarrow/_flight* \
  pyarrow/libarrow_python_flight* pyarrow/libarrow_s3* pyarrow/_s3fs*
find . \( -name '*.pyx' -o -name '*.pxd' -o -name '*.pxi' -o -name '*.h' \) -delete
mkdir -p "$out"
XZ_OPT=-T0 tar -cJf "$out/site.tar.xz" .
du -sh "$tmp/site" "$out/site.tar.xz"
