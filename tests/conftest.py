"""The suite's fixtures live in tests/support; folders override ``sim`` and ``clock`` in their own conftest."""

pytest_plugins = ["tests.support.fixtures"]
