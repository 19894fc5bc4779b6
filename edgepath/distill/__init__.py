"""Distillation: losses, heads, recipes (h0mini, xmag, expert), DDP trainer, teacher-feature cache."""
