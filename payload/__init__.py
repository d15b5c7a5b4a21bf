"""Payload code shared by the flight stack and the injection engine: the workloads (scripts
of HAL operations), the on-board model and the outcome classifier. It depends on the HAL
only, so the flight layer uses it without importing the simulator layer."""
