"""Example and bundled device profiles (TOML data files, shipped in the wheel)."""
