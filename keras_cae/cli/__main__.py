"""`python -m keras_cae.cli ...`, the same as the `keras-cae` command."""

import sys

from keras_cae.cli import main

sys.exit(main())
