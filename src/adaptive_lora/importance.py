"""Data-driven rank allocation (importance probes, spectrum, EVA, AdaLoRA, from_run)."""
