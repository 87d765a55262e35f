"""A complete, strict vfio-user server in Python: the suite's reference target."""
