"""cosim: a network-centric co-simulator for serving Mixture-of-Experts LLMs on GPU clusters.

The public entry points of the network core are:

- :func:`cosim.topology.load_topology` -- read a topology YAML file (or a shipped preset by name).
- :class:`cosim.network.FlowSet` and :mod:`cosim.network.collectives` -- describe traffic as flows.
- :func:`cosim.network.simulate` -- run the flows on the ``packet`` (ns-3) or ``flow`` backend.
"""

__version__ = "0.1.0"
