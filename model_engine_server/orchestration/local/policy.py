"""How the local orchestrator supervises its processes: every timing and threshold, named in one place."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SupervisionPolicy:
    # Health checks: `GET /health` this often while a replica starts, less often once it is ready (its exit is
    # noticed at once anyway); a ready replica that fails this many checks in a row gets no traffic until it answers.
    health_interval_seconds: float = 1.0
    startup_probe_seconds: float = 0.1  # while starting: a waiting cold start ends soon; a refused probe costs nothing
    ready_health_interval_seconds: float = 5.0
    health_timeout_seconds: float = 5.0
    unhealthy_after_failures: int = 3
    # A replica that was ready and has not answered its health check for this long is hung: it is killed and
    # restarted like a crashed one.
    hung_restart_after_seconds: float = 120.0
    # The first load of a GGUF model converts it to safetensors, so allow a generous start-up.
    startup_timeout_seconds: float = 900.0
    # Restarts of a crashed replica wait initial * 2**(crashes-1) seconds, capped.
    restart_backoff_initial_seconds: float = 1.0
    restart_backoff_max_seconds: float = 60.0
    # This many exits in a row (without the replica staying healthy for `stable_after_seconds`) is a crash loop:
    # the endpoint turns UPDATE_FAILED with the last crash's output, and restarts continue at the capped backoff.
    crash_loop_after: int = 3
    stable_after_seconds: float = 60.0
    # Load (in-flight requests, from each ready replica's /metrics) is read this often for autoscaling and drains.
    load_interval_seconds: float = 1.0
    # A replica being removed leaves the replica lists first; requests routed just before still reach it within this.
    drain_settle_seconds: float = 2.0
    # SIGTERM first so in-flight streams can finish, SIGKILL after this grace.
    stop_grace_seconds: float = 10.0
    # How many trailing lines of a crashed replica's output go into the endpoint's status_reason.
    crash_reason_lines: int = 5
    crash_reason_max_chars: int = 800
