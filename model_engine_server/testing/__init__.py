"""The test kit shared by ``tests/``, ``clients/python/tests``, ``integration_tests/`` and ``benchmarks/``.

One way to do each thing a test needs around the platform:

- ``eventually`` / ``eventually_async``: poll a condition until it holds, failing with a description at the deadline
  (never a fixed sleep);
- ``free_port``: a free TCP port on 127.0.0.1;
- ``platform``: run ``model-engine <command>`` as a user would (``start_platform``, ``Platform``), in an environment
  cleaned of the caller's ``LLM_ENGINE_*`` settings (``platform_env``);
- ``tgi``: the instant TGI-protocol server (``InstantTgiServer``, ``running_instant_tgi``;
  ``python -m model_engine_server.testing.tgi`` runs it as an inference-server command);
- ``serving``: ``async with serving(server)`` starts any server with async ``start``/``stop`` for a block,
  ``with running(process)`` one with plain ``start``/``stop``;
- ``peers``: the separate venv with the published clients we stay compatible with (built by ``make peers``).

It depends on neither the server nor the SDK, so ``cd clients/python && pytest`` can use it too; tests that need a
real gateway skip when ``model_engine_server`` is not importable (``platform.require_server()``).
"""

from model_engine_server.testing.polling import eventually, eventually_async
from model_engine_server.testing.ports import free_port

__all__ = ["eventually", "eventually_async", "free_port"]
