"""Releases for the deployer tests: the reference bot's (and a stub's that only serves /metrics),
placed on a simulator's canary account."""

from __future__ import annotations

from controller.canonical import canonical_json, sha256_hex
from controller.config.manifest import ReleaseManifest
from controller.config.strategy import StrategyConfig
from controller.config.yamlfile import load_model
from controller.deploy import Placement
from controller.sim import Simulator
from tests.support.checkout import EXAMPLES
from tests.support.simulator import PROCESS_SPEED

BOT = EXAMPLES / "reference-bot"

STUB = """\
import http.server, signal, sys
port, behaviour = int(sys.argv[1]), sys.argv[2]
if behaviour == "ignores-sigterm":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if behaviour == "tells-sigterm":
    def told(signum, frame):
        print("got SIGTERM", flush=True)
        sys.exit(0)
    signal.signal(signal.SIGTERM, told)
if behaviour == "never-ready":
    signal.pause()
class Metrics(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"stub_up 1\\n")
    def log_message(self, *args):
        pass
print("stub serving", flush=True)
http.server.HTTPServer(("127.0.0.1", port), Metrics).serve_forever()
"""


def reference_manifest() -> ReleaseManifest:
    return load_model(ReleaseManifest, BOT / "manifest.yaml")


def stub_manifest(behaviour: str = "serves", port: int = 0) -> ReleaseManifest:
    """A bot that only serves /metrics: ``ignores-sigterm`` or ``tells-sigterm`` (says so in its output)
    too, or ``never-ready`` (serves nothing)."""
    return ReleaseManifest.model_validate({"name": "stub", "command": ["{python}", "-c", STUB, "{metrics_port}",
                                                                       behaviour],
                                           "metrics": {"port": port}, "artifact": {"path": "."}})


def snapshot(strategy_file: str = "strategy.yaml") -> tuple[str, str]:
    """A config snapshot as the release store keeps it: canonical JSON, and its SHA-256."""
    text = canonical_json(load_model(StrategyConfig, BOT / strategy_file).model_dump(mode="json"))
    return text, sha256_hex(text)


def exchange_of(sim: Simulator) -> dict[str, str]:
    account = sim.accounts["canary"]
    return {"rest_url": sim.rest_url, "ws_url": sim.ws_url, "sapi_url": sim.sapi_url,
            "api_key": account.api_key, "api_secret": account.api_secret}


def placement(exchange: dict[str, str], *, release: str = "1.0.0", strategy_file: str = "strategy.yaml",
              manifest: ReleaseManifest | None = None, config_text: str | None = None,
              instance: str = "sim-canary") -> Placement:
    text, sha = snapshot(strategy_file)
    if config_text is not None:
        text, sha = config_text, sha256_hex(config_text)
    return Placement(instance=instance, release=release, manifest=manifest or reference_manifest(),
                     config_text=text, config_sha256=sha, exchange=exchange,
                     env={"CANARY_SIM_SPEED": str(PROCESS_SPEED)})
