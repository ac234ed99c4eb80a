"""``perforate.experiments.models``: the harness's standard models, kept at its first path.

The same module object as :mod:`perforate.experiments.data.models` (so its private names and
monkeypatching work too).
"""
import sys

import perforate.experiments.data.models as _module

sys.modules[__name__] = _module
