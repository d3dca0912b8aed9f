"""Running the platform: the process trees behind ``model-engine serve`` and ``model-engine orchestrator``.

The composition root next to ``cli``: the only package that wires the API, the orchestrators and the registry
together. ``serve`` (one machine) is in ``serve``; ``orchestrator`` (Kubernetes, leader-elected) in ``leadership``;
the orchestrator + reconciler pair both run in ``control_plane``.
"""
