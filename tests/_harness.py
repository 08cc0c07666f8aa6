"""Reusable checks for every model variant: config and `.keras` round trips, no
warnings, and one request to a served copy of an exported encoder."""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import warnings
from collections.abc import Iterator

import keras
import numpy as np

from tests._loopback import free_port, running_server, serve_command

# Deprecation warnings raised inside these packages are theirs, not ours; pyproject.toml
# ignores the same ones for the whole suite (e.g. NumPy 2's `__array__` copy notice
# that Keras's own variable saving triggers).
_THIRD_PARTY = ("tensorflow", "keras", "tf2onnx", "flatbuffers", "google", "onnx")


def _is_third_party_deprecation(record: warnings.WarningMessage) -> bool:
    if not issubclass(record.category, DeprecationWarning):
        return False
    parts = os.path.normpath(record.filename).split(os.sep)
    return "site-packages" in parts and parts[parts.index("site-packages") + 1] in _THIRD_PARTY


@contextlib.contextmanager
def assert_no_warnings() -> Iterator[None]:
    """Fails if the block warns (except third-party deprecations, as in pyproject)."""
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        yield
    ours = [r for r in records if not _is_third_party_deprecation(r)]
    assert not ours, [f"{r.category.__name__}: {r.message} ({r.filename})" for r in ours]


def assert_config_round_trip(model: keras.Model) -> None:
    """config → object → config gives the same JSON."""
    config = model.get_config()
    clone = type(model).from_config(config)
    before = json.dumps(config, sort_keys=True, default=str, indent=1).splitlines()
    after = json.dumps(clone.get_config(), sort_keys=True, default=str, indent=1).splitlines()
    assert after == before, "\n".join(difflib.unified_diff(before, after, lineterm=""))


def serve_one_request(model_path: str, x: np.ndarray, log: str, name: str = "enc") -> np.ndarray:
    """Starts `keras-cae serve` on a loopback port, posts `x` once, stops it; the codes.

    The codes come back as JSON numbers; each must be exactly a float32.
    """
    import httpx

    port = free_port()
    with running_server(serve_command(model_path, port, "--name", name), port, log) as address:
        tensor = {"name": "x", "shape": list(x.shape), "datatype": "FP32"}
        tensor["data"] = x.ravel().tolist()
        response = httpx.post(f"http://{address}/v2/models/{name}/infer", json={"inputs": [tensor]})
        assert response.status_code == 200, response.text
        [output] = response.json()["outputs"]
    wide = np.asarray(output["data"], dtype=np.float64)
    codes = wide.astype(np.float32)
    np.testing.assert_array_equal(codes.astype(np.float64), wide)
    return codes.reshape(output["shape"])
