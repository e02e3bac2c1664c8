"""The online loop: candidate value-model policies as the arms of live rounds, Ax proposing each next round.

``space`` owns the Ax experiment (parameters, objectives, guardrail constraints, its saved state), ``lifts`` the
measurement of a round from the decision log and the outcomes, ``choice`` the rule for the best arm so far,
and ``traffic`` the simulated users that play against a running server.
"""
