"""``perforate.experiments.datasets``: the harness's datasets (examples, benchmarks), kept at its first path.

The same module object as :mod:`perforate.experiments.data.datasets` (so its private names and
monkeypatching work too).
"""
import sys

import perforate.experiments.data.datasets as _module

sys.modules[__name__] = _module
