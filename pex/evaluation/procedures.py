"""The multiple-testing procedures that certify guardrails, by name, and what "certified" means under each.

Imports nothing, so that the command line can list the choices without loading the modelling stack;
:mod:`pex.evaluation.recommendation` carries them out.
"""

# Graphical is the default: gated (the safest alone at the full level, the rest only once it passed) let one marginal
# first candidate veto every other test (issue 23: a 20,000-unit segment_harm run kept control although tree-d1 would
# have been certified); graphical keeps half of gated's head start for the first and passes a failure's share on.
# bench/certification.py compares them on shared fits.
CERTIFICATION = "graphical"
CERTIFICATIONS = ("graphical", "gated", "fixed-sequence", "step-down")
# how the candidates were tested, as a clause after "N candidates tested ..." in the report and the CLI text
PROCEDURE = {
    "graphical": ("in an order fixed before the test: the first (the safest planned) at half of the one-sided 5%, all "
                  "the others together at the other half (step-down max-t); a candidate that passes hands its share "
                  "on, so a narrow miss first stops nothing (a graphical procedure)"),
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
    return (f"Certified means: {rows} each guardrail's one-sided upper bound of harm is within its limit, "
            f"and the 95% holds for every certified policy at once. Candidates are tested {PROCEDURE[certification]}.")
