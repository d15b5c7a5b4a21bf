"""orbithil hardware abstraction layer."""
