from meshrec.testing.fixtures import body_models_dir, plugin_manager  # noqa: F401
