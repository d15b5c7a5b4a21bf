"""orbithil flight layer."""
