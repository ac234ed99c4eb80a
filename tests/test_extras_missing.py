"""Without an extra's package, importing its integration raises MissingExtraError naming the pip
command. Checked in a fresh interpreter: the integration modules run from disk there, with
siblings from the same tree. (Re-executing one inside the test session, against modules the
session imported minutes earlier, failed with an unrelated ImportError whenever the checkout
changed under a running suite.) Runs with or without the extras installed."""
import json
import subprocess
import sys

import pytest

EXTRAS = {"lightning": "lightning.pytorch", "transformers": "transformers", "wandb": "wandb",
          "tabular": "pytorch_tabular"}

SCRIPT = """
import importlib, json, sys
import perforate as pf
out = {}
for module, package in %r.items():
    sys.modules[package] = None  # as if not installed (in the light install it is not)
    try:
        importlib.import_module("perforate.integrations." + module)
        out[module] = "imported"
    except pf.MissingExtraError as exc:
        out[module] = str(exc)
print(json.dumps(out))
""" % (EXTRAS,)


def test_each_integration_without_its_package_names_the_pip_command():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    messages = json.loads(done.stdout.strip().splitlines()[-1])
    for extra, package in EXTRAS.items():
        assert messages[extra] == f"'{package}' is not installed; run: pip install 'perforate[{extra}]'"


@pytest.mark.parametrize("extra", ["optuna"])
def test_a_sweep_backend_without_its_package_names_the_pip_command(monkeypatch, extra):
    import perforate as pf
    from perforate.errors import require_extra

    monkeypatch.setitem(sys.modules, extra, None)
    with pytest.raises(pf.MissingExtraError, match=rf"pip install 'perforate\[{extra}\]'"):
        require_extra(extra, extra)
