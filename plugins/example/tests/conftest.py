import pytest

from meshrec.plugins import PluginManager, get_plugin_manager, reset_plugin_manager


@pytest.fixture
def plugin_manager():
    previous = get_plugin_manager()
    manager = PluginManager(discover=False)
    reset_plugin_manager(manager)
    yield manager
    reset_plugin_manager(previous)
