"""Known-harmless third-party noise, silenced at its source (environment variables, log levels), never by
swallowing errors. Entrypoints call `quiet()` once; Ray workers get `runtime_env()`, which runs it at their start."""

from __future__ import annotations

import importlib.util
import logging
import os
import sys

# Progress bars repeat the data report's counts line by line in job logs; Ray's print patch floods worker logs with
# bytecode listings (docs/platform-notes.md); tokenizers warns about forking after its threads started.
PROCESS_ENV = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
}
# Loggers that warn about optional speed-ups rayfit does not use: bitsandbytes' CPU backend asks for the `kernels`
# package (which downloads from a hub) on CPUs with AVX512-BF16; the slow path it falls back to is the tested one.
# Ray Train logs every report of every rank at INFO (the metrics dict); rayfit prints one progress line instead.
# Its placement-group cleaner warns once a second that it cannot query the state API when the dashboard is off (a
# local run starts Ray without it; docs/platform-notes.md): it keeps monitoring, and a real failure still logs an error.
# That logger is named by its file's path (getLogger(__file__)), so RunConfig's LoggingConfig does not reach it.
QUIET_LOGGERS = {
    "bitsandbytes.backends.cpu.ops": logging.ERROR,
    "module:ray.train.v2._internal.execution.context": logging.WARNING,
    "ray.train.v2._internal.execution.controller.placement_group_cleaner": logging.ERROR,
    # Ray Data announces each dataset's start and end, and that progress bars are off (rayfit turns them off: the
    # data report carries the counts).
    "ray.data._internal.execution.streaming_executor": logging.WARNING,
    "ray.data._internal.progress": logging.ERROR,
}


class _AtLeast(logging.Filter):
    """Drops a logger's records below a level. A filter, not setLevel: Ray Train's dictConfig resets the levels of
    existing loggers under `ray.train` when a worker starts, but keeps their filters."""

    def __init__(self, level: int):
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.level


def runtime_env(use_gpu: bool) -> dict:
    """A Ray runtime env that applies `quiet()` in each worker process before it imports anything of rayfit's;
    on CPU, DeepSpeed is told so instead of warning that it found no accelerator."""
    env = {**PROCESS_ENV, **({} if use_gpu else {"DS_ACCELERATOR": "cpu"})}
    return {"env_vars": env, "worker_process_setup_hook": "cluster.noise.quiet"}


def quiet() -> None:
    """Apply the settings above to this process (and the processes it starts); values already set are kept."""
    for key, value in PROCESS_ENV.items():
        os.environ.setdefault(key, value)
    for name, level in QUIET_LOGGERS.items():
        if name.startswith("module:"):
            module = name.removeprefix("module:")
            if module.split(".")[0] not in sys.modules:
                continue  # only Ray's own processes log there; finding the file would import Ray into every command
            found = importlib.util.find_spec(module)
            if found is None or found.origin is None:
                continue
            name = found.origin
        logger = logging.getLogger(name)
        if not any(isinstance(f, _AtLeast) for f in logger.filters):
            logger.addFilter(_AtLeast(level))
