"""Stages of the fine-tune-and-measure pipeline; each runs as `python -m stages.<name>`."""

import logging

from stages.core.numerics import pin_environment

# before any stage imports torch (stages/core/numerics.py says why)
pin_environment()


class _NoKernelsPackage(logging.Filter):
    """bitsandbytes, imported by peft, logs a warning on every CPU with AVX-512 BF16 when the
    optional `kernels` package is absent; it then uses its own CPU kernel, so the warning says
    nothing a user must act on and printed once per stage (13 times a `dvc repro`). Only that
    cause is dropped: a `kernels` install that fails for another reason still warns."""

    def filter(self, record: logging.LogRecord) -> bool:
        cause = record.args[0] if isinstance(record.args, tuple) and record.args else None
        return not (record.getMessage().startswith("Failed to load CPU gemm_4bit_forward")
                    and isinstance(cause, ModuleNotFoundError) and cause.name == "kernels")


logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_NoKernelsPackage())
