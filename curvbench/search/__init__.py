"""Studies: the Optuna queue every worker pops from (`studies`, with Optuna's private API behind
`optuna_private`), the hyperparameter search (`tune`), time to target (`to_target`), and the protocols built
from them: `verdict` (equal-budget tuning, then to-target, then the report) and `scale_batch`."""
