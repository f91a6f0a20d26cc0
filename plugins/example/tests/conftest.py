from meshrec.testing.fixtures import plugin_manager  # noqa: F401
