"""TensorFlow without its start-up log lines, so that the first line a user sees is ours.

Importing TensorFlow prints oneDNN, CUDA-stub and CPU-feature notices from C++
(through absl, before absl is initialised, so no environment variable reaches them),
and its first device query prints ``E0000 ... failed call to cuInit`` on a machine
without a GPU, which reads as a failure. `import_tensorflow` hides both unless the
user asked for `--verbose`.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

from keras_cae.cli.errors import CliError

__all__ = ["import_tensorflow"]


@contextlib.contextmanager
def _stderr_to_devnull() -> Iterator[None]:
    """Points file descriptor 2 at /dev/null, where C++ code writes its logs."""
    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def _not_installed(error: ImportError) -> bool:
    """Whether `error` is a module missing from the installation (the TensorFlow-free
    service install), rather than an installed TensorFlow that fails to import."""
    if not isinstance(error, ModuleNotFoundError) or not error.name:
        return False
    import importlib.machinery

    # The path finder alone: a module blocked in `sys.modules` is still installed.
    return importlib.machinery.PathFinder.find_spec(error.name.partition(".")[0]) is None


def import_tensorflow(verbose: bool) -> None:
    """Imports TensorFlow and Keras; quietly unless `verbose`.

    Quiet means: TensorFlow's C++ log level set to errors-that-are-fatal only
    (``TF_CPP_MIN_LOG_LEVEL=3``, unless the environment sets it), the import itself
    run with stderr sent to /dev/null, and the absl and TensorFlow Python loggers
    set to `ERROR`. Errors still reach the user as exceptions.

    Args:
        verbose: leave every log line as TensorFlow prints it.

    Raises:
        ModuleNotFoundError: TensorFlow, Keras or a module they need is not installed
            (`keras_cae.cli.main` says which install has it).
        CliError: an installed TensorFlow failed to import (its log was hidden).

    Example:

    >>> import_tensorflow(verbose=False)  # doctest: +SKIP
    """
    if verbose:
        return
    if sys.modules.get("tensorflow") is None:  # Not imported yet, or blocked.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        try:
            with _stderr_to_devnull():
                import keras  # noqa: F401
                import tensorflow  # noqa: F401
        except ImportError as error:  # Its log went to /dev/null: say where to see it.
            if _not_installed(error):
                raise  # `keras_cae.cli.main` names the install that has it, as for `train`.
            raise CliError(f"cannot import TensorFlow ({error}); --verbose shows its log") from None
    import absl.logging
    import tensorflow as tf

    absl.logging.set_verbosity(absl.logging.ERROR)
    tf.get_logger().setLevel("ERROR")
