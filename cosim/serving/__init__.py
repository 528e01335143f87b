"""Serving simulation: workloads, deployments of pools on a topology,
batching policies, a discrete-event simulation of requests with step times from the engine's
step-time model and P->D KV transfers through the network, and pure metric functions.

Imports only the stages to its left (topology, network, models, kernels, trace, engine).
"""

from cosim.serving.deployment import (  # noqa: E402
    BatchingSpec, Deployment, PoolMemory, PoolSpec, deployment_from_dict, load_deployment, pool_memory,
)
from cosim.serving.metrics import ServingSummary, summarize  # noqa: E402
from cosim.serving.prefix_cache import PrefixCache  # noqa: E402
from cosim.serving.run import ServeResult, serve  # noqa: E402
from cosim.serving.simulator import ServingOptions, ServingRun, simulate_serving  # noqa: E402
from cosim.serving.workload import (  # noqa: E402
    ARRIVALS, DISTRIBUTIONS, PRESETS, SLO, ClosedLoop, Fixed, Gamma, LogNormal, Normal, Poisson, Requests, Uniform,
    WorkloadSpec, Zipf, generate_requests, load_workload, preset,
)

__all__ = ["ARRIVALS", "DISTRIBUTIONS", "PRESETS", "SLO", "BatchingSpec", "ClosedLoop", "Deployment", "Fixed",
           "Gamma", "LogNormal", "Normal", "Poisson", "PoolMemory", "PoolSpec", "PrefixCache", "Requests",
           "ServeResult", "ServingOptions", "ServingRun", "ServingSummary", "Uniform", "WorkloadSpec", "Zipf",
           "deployment_from_dict", "generate_requests", "load_deployment", "load_workload", "pool_memory", "preset",
           "serve", "simulate_serving", "summarize"]
