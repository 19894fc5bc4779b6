"""Post-training quantization (NNCF) to INT8 / FP8, gated on embedding fidelity against float."""
