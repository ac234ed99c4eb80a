"""The experiment harness behind ``perforate demo``, ``perforate bench`` (``frontier``, ``cost``)
and the study API, one subpackage per command over two shared ones:

- ``data/``: the offline datasets and the standard models (one width knob each);
- ``harness/``: what every command shares (run settings, the protocol base, the training loop
  and its early stopper, the results file, the perforatedai ``reference`` arm, progress bars,
  the common command-line options);
- ``bench/``, ``frontier/``, ``cost/``: one command each; ``cli.py`` joins them.

``perforate.experiments.study``, ``.task``, ``.datasets`` and ``.models`` are kept at their first
paths (the same modules as ``frontier.study``, ``frontier.task``, ``data.datasets``,
``data.models``).
"""
