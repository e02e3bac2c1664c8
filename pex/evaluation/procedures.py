"""The multiple-testing procedures that certify guardrails, by name, and what "certified" means under each.

Imports nothing, so that the command line can list the choices without loading the modelling stack;
:mod:`pex.evaluation.recommendation` carries them out.
"""

# bench/guardrails.py-style comparison, 35 experiments of 50,000 units (README): mean gain share of the oracle 0.392
# gated, 0.390 step-down, 0.377 fixed-sequence, none truly beyond a limit. Gated keeps step-down's power where the
# safe candidates differ (no stop at the first failure) without its loss where only marginal ones pass (the safest
# gets the whole level), so it is the default.
CERTIFICATION = "gated"
CERTIFICATIONS = ("gated", "fixed-sequence", "step-down")
# how the candidates were tested, as a clause after "N candidates tested ..." in the report and the CLI text
PROCEDURE = {
    "fixed-sequence": ("one at a time in an order fixed on the building units, safest first, each guardrail one-sided "
                       "at 95%, stopping at the first that fails (fixed-sequence testing)"),
    "step-down": ("all together, each guardrail one-sided at a level raised so that 95% holds for every candidate at once "
                  "and lowered for the rest as candidates are certified (step-down max-t)"),
    "gated": ("the safest first, alone, each guardrail one-sided at 95%; once it passed, all the others together at a level "
              "raised so that 95% holds for every one of them at once (a gatekeeper, then step-down max-t)"),
}


def certified_text(certification: str, crossfitted: bool = False) -> str:
    """What "certified" means, in plain words, for one of :data:`CERTIFICATIONS` (``crossfitted``: on every unit,
    each under the half-policy that never saw it, :mod:`pex.services.crossfit`)."""
    rows = ("on every unit, each decided by the half of the policy built without it," if crossfitted else "on held-out units,")
    return (f"Certified means: {rows} each guardrail's one-sided upper bound of harm is within its max_harm, "
            f"and the 95% holds for every certified policy at once. Candidates are tested {PROCEDURE[certification]}.")
