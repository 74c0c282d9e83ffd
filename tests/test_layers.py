"""The layers hold: every import-linter contract in pyproject.toml is kept, and the SDK stays light."""

from __future__ import annotations

import subprocess
import sys
import tomllib

from .layers import REPO, run_contracts

EXPECTED_CONTRACTS = {"product-layers", "engine-layers", "engine-knows-no-network", "plaintext-not-secure",
                      "sdk-without-daemon", "gateway-over-the-sdk", "sdk-light", "no-cycles"}


def test_every_layer_has_a_contract() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    assert {c["id"] for c in config["contracts"]} == EXPECTED_CONTRACTS


def test_import_contracts_are_kept() -> None:
    result = run_contracts()
    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    assert f"Contracts: {len(EXPECTED_CONTRACTS)} kept, 0 broken." in report, report


def test_importing_the_sdk_loads_no_daemon_and_no_metrics() -> None:
    code = ("import secureinfer.client, sys; "
            "print([m for m in sys.modules if 'daemon' in m or 'prometheus' in m])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout
