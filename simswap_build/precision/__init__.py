"""Lower precision with a guarantee: FP16/BF16 gates, the INT8 Q/DQ recipe, calibration ranges, the
tolerance bound and the held-out fidelity report."""
