"""Watching live policies: sequentially valid guardrail bounds, rollout rules, offline/online agreement, drift,
staleness and alert rules. Pure functions over arrays and frames: the services layer reads the store and calls them."""
