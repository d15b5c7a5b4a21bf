"""orbithil sim layer."""
