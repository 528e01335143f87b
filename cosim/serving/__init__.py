"""Serving simulation (in progress, issue 8): workloads, deployments of pools on a topology,
batching policies, a discrete-event simulation of requests with step times from the engine's
step-time model and P->D KV transfers through the network, and pure metric functions.

Imports only the stages to its left (topology, network, models, kernels, trace, engine).
"""
