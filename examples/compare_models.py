"""Is a CAE more contractive than a plain auto-encoder? The analysis API on the digits.

Trains a plain auto-encoder (λ = 0) and a CAE (λ = 1e-3) with the same architecture,
seed and budget, then measures both on held-out digits with `keras_cae.studies.analysis` and
draws the figures with `keras_cae.studies.plots`. For the full, seeded AE / DAE / CAE / CAE+H
comparison with a validation search, run ``keras-cae compare`` instead.

Run (about a minute on a laptop CPU; needs ``pip install 'keras-cae[plot]'``)::

    python examples/compare_models.py --out runs/example-analysis
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from keras_cae import _io, dense_autoencoder, load_digits
from keras_cae.studies import analysis, plots
from keras_cae.training import split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/example-analysis", help="a new directory")
    parser.add_argument("--epochs", type=int, default=40)
    args = parser.parse_args()
    try:
        plots.require_matplotlib()  # The figures come last; say it before a minute of training.
    except ImportError as error:
        raise SystemExit(f"examples/compare_models.py: {error}") from None

    digits = load_digits()
    x_train, x_test, _, _ = split(digits, test_fraction=0.2, seed=0)
    radii = np.geomspace(0.01, 10.0, 10)
    encoders, curves, spectra = {}, {}, {}
    for name, weight in (("AE", 0.0), ("CAE", 1e-3)):
        model = dense_autoencoder(64, 32, contractive_weight=weight, learning_rate=3e-3, seed=0)
        model.fit(x_train, epochs=args.epochs, batch_size=32, verbose=0)
        encoders[name] = model.encoder
        spectra[name] = analysis.jacobian_spectrum(model.encoder, x_test)
        curves[name] = analysis.contraction_curve(model.encoder, x_test, radii)
        norm = analysis.jacobian_norm(model.encoder, x_test).mean()
        top = spectra[name].mean(axis=0)
        print(
            f"{name}: mean ||J_f(x)||_F = {norm:.3f}; mean singular values "
            f"s1..s5 = {np.round(top[:5], 3).tolist()}, s32 = {top[-1]:.4f}; "
            f"contraction ratio at r=0.01: {curves[name][0]:.3f}, at r=10: {curves[name][-1]:.3f}"
        )

    with _io.atomic_directory(args.out) as staging:
        plots.plot_spectra(spectra, os.path.join(staging, "spectra.png"))
        plots.plot_contraction_curves(radii, curves, os.path.join(staging, "contraction.png"))
        examples = x_test[:6]
        tangents = analysis.tangent_directions(encoders["CAE"], examples, k=4)
        plots.plot_tangents(
            examples, tangents, os.path.join(staging, "cae_tangents.png"),
            singular_values=spectra["CAE"][:6],
        )  # fmt: skip
    print(f"wrote spectra.png, contraction.png and cae_tangents.png into {args.out}")


if __name__ == "__main__":
    main()
