"""pytest plugin entry point (hooks are added as the plugin grows)."""
