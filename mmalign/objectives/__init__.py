"""The preference-objective library.

``get(name)`` returns an objective's callable; ``get_spec(name)`` its declaration.
Every objective is ``fn(policy, reference, ctx=None, **params) -> ObjectiveOutput`` with a
per-row ``loss``; its docstring cites its paper and gives its formula.
"""
from mmalign.objectives.spec import (  # noqa: F401
    Context,
    ObjectiveSpec,
    check_paired,
    get,
    get_spec,
    log_ratios,
    names,
    objective,
    requested_needs,
    reward_metrics,
)

# importing the modules registers the built-in objectives
from mmalign.objectives import pairwise  # noqa: F401,E402
from mmalign.objectives import anchored  # noqa: F401,E402
from mmalign.objectives import bco  # noqa: F401,E402
from mmalign.objectives import compose  # noqa: F401,E402
from mmalign.objectives import distributional  # noqa: F401,E402
from mmalign.objectives import reference_free  # noqa: F401,E402
from mmalign.objectives import sft  # noqa: F401,E402
from mmalign.objectives import unpaired  # noqa: F401,E402
from mmalign.objectives import token_level  # noqa: F401,E402
from mmalign.objectives import conditional  # noqa: F401,E402
from mmalign.objectives import rrpo  # noqa: F401,E402
