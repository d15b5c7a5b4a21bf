"""orbithil tools layer."""
