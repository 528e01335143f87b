"""Design-space exploration: experiments in YAML, design points, their evaluation under SLOs,
runners (local process pool, Ray), a resumable result store, Pareto fronts and the best
deployment per mode. ``docs/experiments.md``."""

from cosim.explore.analysis import best_per_mode, pareto_front, pareto_fronts
from cosim.explore.evaluate import STATUSES, evaluate_point
from cosim.explore.run import ExploreResult, explore
from cosim.explore.runners import RUNNERS
from cosim.explore.space import MODE_BUILDERS, DesignPoint, enumerate_points
from cosim.explore.spec import ExperimentSpec, experiment_from_dict, load_experiment
from cosim.explore.store import ResultStore

__all__ = ["MODE_BUILDERS", "RUNNERS", "STATUSES", "DesignPoint", "ExperimentSpec", "ExploreResult", "ResultStore",
           "best_per_mode", "enumerate_points", "evaluate_point", "experiment_from_dict", "explore",
           "load_experiment", "pareto_front", "pareto_fronts"]
