"""Serve the simulator on a loopback port, in a background thread."""

from __future__ import annotations

from local.serving import ThreadedServer
from local.simulator.app import Simulator, SimulatorConfig, Stats, create_simulator_app


class SimulatorServer:
    def __init__(self, config: SimulatorConfig | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.simulator = Simulator(config)
        self._server = ThreadedServer(create_simulator_app(self.simulator), host, port)

    @property
    def stats(self) -> Stats:
        return self.simulator.stats

    def reconfigure(self, **changes: object) -> None:
        self.simulator.reconfigure(**changes)

    @property
    def base_url(self) -> str:
        return f"{self._server.url}/v1"

    def start(self) -> SimulatorServer:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
