"""Off-policy evaluation: the estimators, the comparison of policies on held-out units, and the recommendation."""
