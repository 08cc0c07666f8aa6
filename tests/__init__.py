"""The test suite. `ROOT` is the repository's root folder, wherever a test module lies."""

import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
