"""The server as Ray Serve deployments: the same FastAPI app (create_app), built in each replica, behind Ray
Serve's proxy, with replicas and autoscaling on ongoing requests. Ray is an extra (pip install 'asrflow[ray]').

Each replica is a whole asrflow server: its own model holder, scheduler, limits and metrics. Ray Serve's proxy
routes requests among them, WebSockets included (a realtime session stays on the replica that took it)."""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import subprocess
import sys
import threading
from typing import NamedTuple

from asrflow.errors import InvalidOptionError
from asrflow.server.holder import ServerConfig

APP_NAME = "asrflow"


class Replicas(NamedTuple):
    least: int = 1
    most: int | None = None  # None: a fixed count (least); else autoscaling between them
    target_ongoing_requests: float = 2.0

    def options(self) -> dict:
        """The deployment's options, as Ray Serve takes them."""
        if self.most is None:
            return {"num_replicas": self.least}
        if self.most < self.least:
            raise InvalidOptionError(f"--max-replicas ({self.most}) is below --replicas ({self.least}): raise it.")
        return {
            "autoscaling_config": {
                "min_replicas": self.least,
                "initial_replicas": self.least,
                "max_replicas": self.most,
                "target_ongoing_requests": self.target_ongoing_requests,
                "upscale_delay_s": 2.0,
                "downscale_delay_s": 10.0,
            }
        }


def _serve():
    try:
        from ray import serve
    except ImportError:
        raise InvalidOptionError("--ray needs Ray Serve, which is not installed: pip install 'asrflow[ray]'.") from None
    return serve


def application(config: ServerConfig, replicas: Replicas, grace: float = 30.0):
    """The Ray Serve application: one deployment whose replicas each build the app (create_app) when they start."""
    serve = _serve()

    def build():
        from asrflow.server.app import create_app

        return create_app(config)

    server = serve.deployment(serve.ingress(build)(), name="asrflow-server")
    # a replica holds requests as the server's own admission does (its queue, its limits): Ray passes them all on
    return server.options(
        max_ongoing_requests=max(config.queue_size, 1),
        graceful_shutdown_timeout_s=grace,  # --grace: requests in flight finish, as in one process
        graceful_shutdown_wait_loop_s=1.0,
        **replicas.options(),
    ).bind()


def serve_on_ray(
    config: ServerConfig, port: int, replicas: Replicas, address: str | None = None, grace: float = 30.0
) -> None:
    """Deploy on the cluster at `address`, or on a local one, and serve on `port` until SIGTERM or SIGINT; then
    delete the application (its replicas finish their requests within `grace`) and stop a local cluster.

    A local cluster's daemons start in a process of a session of its own (`python -m asrflow.server.ray`): a
    terminal's Ctrl-C or a supervisor's signal to this process group would otherwise kill them under the
    application, whose deletion then waited on them forever. This process passes the signal on to it."""
    replicas.options()  # refused before any cluster starts
    _serve()
    if address is not None:
        return _deploy(config, port, replicas, address, grace)
    child = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE, start_new_session=True)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: child.send_signal(signal.SIGTERM))
    with child.stdin:
        child.stdin.write(pickle.dumps((config, port, replicas, grace)))
    status = child.wait()
    with contextlib.suppress(ProcessLookupError):  # the node's agents outlive ray.shutdown: the session is ours
        os.killpg(child.pid, signal.SIGKILL)
    if status:
        raise SystemExit(status)


def _deploy(config: ServerConfig, port: int, replicas: Replicas, address: str | None, grace: float) -> None:
    serve = _serve()
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # nothing leaves the machine
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        serve.start(http_options={"host": config.host, "port": port})
        serve.run(application(config, replicas, grace), name=APP_NAME, route_prefix="/")
        stop.wait()
    finally:
        serve.delete(APP_NAME)
        if address is None:
            serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":  # serve_on_ray's local cluster, in a session of its own
    config, port, replicas, grace = pickle.loads(sys.stdin.buffer.read())
    try:
        _deploy(config, port, replicas, None, grace)
    except Exception as e:  # noqa: BLE001 - one line, as the CLI gives every failure
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
