"""``perforate.experiments.study``: the study API (README, examples), kept at its first path.

The same module object as :mod:`perforate.experiments.frontier.study` (so its private names and
monkeypatching work too).
"""
import sys

import perforate.experiments.frontier.study as _module

sys.modules[__name__] = _module
