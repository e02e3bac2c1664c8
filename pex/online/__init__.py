"""The online loop: candidate value-model policies as the arms of live rounds, Ax proposing each next round.

``space`` owns the Ax experiment (parameters, objectives, guardrail constraints, its saved state), ``lifts`` the
measurement of a round from the decision log and the outcomes, ``spending`` the loop's error budget split over its
planned rounds, ``choice`` the rule for the best arm so far (a champion kept unless a challenger is significantly
better), and ``traffic`` the simulated users that play against a running server.
"""
