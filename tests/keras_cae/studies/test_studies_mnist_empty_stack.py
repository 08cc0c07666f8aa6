"""`keras_cae.studies.mnist.jacobians` refuses a stack without a layer.

Found by the type check (issue 22): it returned `None` (not an array) for fewer than
one (kernel, bias) pair, which its callers then failed on far from the cause.
"""

from __future__ import annotations

import numpy as np
import pytest

from keras_cae.studies import mnist


@pytest.mark.parametrize("count", [0, 1])
def test_jacobians_of_no_layer_is_a_value_error(count) -> None:
    weights = [np.eye(2, dtype=np.float32)][:count]
    with pytest.raises(ValueError, match=rf"`weights` .* Received: {count} arrays"):
        mnist.jacobians(weights, np.zeros((1, 2)))
