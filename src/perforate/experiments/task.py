"""``perforate.experiments.task``: a user's task (README, the --model/--data options), kept at
its first path.

The same module object as :mod:`perforate.experiments.frontier.task` (so its private names and
monkeypatching work too).
"""
import sys

import perforate.experiments.frontier.task as _module

sys.modules[__name__] = _module
