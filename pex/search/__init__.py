"""The weight search: which value-policy weights trade the metrics off best (dense sweep, optional Ax refinement)."""
