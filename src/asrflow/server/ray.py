"""The server as Ray Serve deployments: the same FastAPI app (create_app), built in each replica, behind Ray
Serve's proxy, with replicas and autoscaling on ongoing requests. Ray is an extra (pip install 'asrflow[ray]').

Each replica is a whole asrflow server: its own model holder, scheduler, limits and metrics. Ray Serve's proxy
routes requests among them, WebSockets included (a realtime session stays on the replica that took it)."""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import socket
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

    def threads(self) -> int:
        """Threads each replica decodes with: this machine's cores shared among as many as may run."""
        return max(1, (os.cpu_count() or 1) // (self.most or self.least))

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
        # Ray gives an actor of one CPU one thread (OMP_NUM_THREADS=1): the node's cores shared among the replicas
        ray_actor_options={"num_cpus": 1, "runtime_env": {"env_vars": {"OMP_NUM_THREADS": str(replicas.threads())}}},
        **replicas.options(),
    ).bind()


def serve_on_ray(
    config: ServerConfig, port: int, replicas: Replicas, address: str | None = None, grace: float = 30.0
) -> None:
    """Deploy on the cluster at `address`, or on a local one of its own, and serve on `port` until SIGTERM or
    SIGINT; then delete the application (its replicas finish their requests within `grace`) and stop a local
    cluster.

    A local cluster's daemons start in a process of a session of its own (`python -m asrflow.server.ray`): a
    terminal's Ctrl-C or a supervisor's signal to this process group would otherwise kill them under the
    application, whose deletion then waited on them forever. This process passes a signal on to it (a second
    one kills it), and should this process die, its end of the pipe closes, which stops it too."""
    replicas.options()  # refused before any cluster starts
    _serve()
    _port_free(config.host, port)
    if address is not None:
        return _deploy(config, port, replicas, address, grace)
    child = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE, start_new_session=True)
    signals = []

    def forward(*_):
        signals.append(1)
        child.send_signal(signal.SIGTERM if len(signals) == 1 else signal.SIGKILL)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    child.stdin.write(pickle.dumps((config, port, replicas, grace)))
    child.stdin.flush()  # kept open: its end is how the child learns this process is gone
    status = child.wait()
    child.stdin.close()
    with contextlib.suppress(ProcessLookupError):  # the node's agents outlive ray.shutdown: the session is ours
        os.killpg(child.pid, signal.SIGKILL)
    if status:
        raise SystemExit(status if status > 0 else 128 - status)


def _port_free(host: str, port: int) -> None:
    """Ray Serve's proxy binds with SO_REUSEPORT: a second server on the port would share it without a word."""
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError as e:
            raise InvalidOptionError(f"{host}:{port} is in use ({e.strerror}): choose another --port.") from None


def _deploy(config: ServerConfig, port: int, replicas: Replicas, address: str | None, grace: float, stop=None) -> None:
    serve = _serve()
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # nothing leaves the machine
    stop = stop or threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    # "local": a cluster of its own, never one that `ray start` left running (ray.init's default would join it)
    ray.init(address=address or "local", include_dashboard=False, log_to_driver=False, configure_logging=False)
    deployed = False
    try:
        serve.start(http_options={"host": config.host, "port": port})
        deployed = True
        # deploying waits for the replicas, which may never start (too few CPUs): a signal must still end it
        failed = []

        def run():
            try:
                serve.run(application(config, replicas, grace), name=APP_NAME, route_prefix="/")
            except Exception as e:  # noqa: BLE001 - raised below, in this thread
                failed.append(e)
                stop.set()

        threading.Thread(target=run, daemon=True).start()
        stop.wait()
        if failed:
            raise failed[0]
    finally:
        if deployed:
            serve.delete(APP_NAME)
            if address is None:
                serve.shutdown()
        ray.shutdown()


def _child() -> None:
    """serve_on_ray's local cluster, in a session of its own: stops on a signal, or when the parent's pipe ends."""
    try:
        config, port, replicas, grace = pickle.load(sys.stdin.buffer)
        stop = threading.Event()
        threading.Thread(target=lambda: (sys.stdin.buffer.read(), stop.set()), daemon=True).start()
        _deploy(config, port, replicas, None, grace, stop)
    except Exception as e:  # noqa: BLE001 - one line, as the CLI gives every failure
        print(f"error: {(str(e).strip().splitlines() or [type(e).__name__])[-1]}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    _child()
