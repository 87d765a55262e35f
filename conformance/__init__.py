"""The vfio-user conformance modules, one per spec section."""
