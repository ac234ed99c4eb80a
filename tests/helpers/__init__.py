"""Plain helpers shared by test modules (models, data, drivers, checks), imported by name:
``from tests.helpers.models import ConvBN``. Fixtures are in ``tests/conftest.py``."""
