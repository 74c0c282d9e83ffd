"""What travels between the SDK and nodes as text: a model's public architecture as JSON, and the keys of the
trailing metadata a node closes a call with."""

from __future__ import annotations

import dataclasses
import json

from secureinfer.models.config import ModelConfig

from .errors import BadRequest

# What a finished session cost the node (its report to the caller): bytes it sent, rounds, seconds open.
REPORT_BYTES, REPORT_ROUNDS, REPORT_SECONDS = "secureinfer-bytes-sent", "secureinfer-rounds", "secureinfer-seconds"
RETRY_AFTER = "secureinfer-retry-after-s"  # a rate-limited call: seconds until the client may try again


def config_to_json(cfg: ModelConfig) -> str:
    """The public architecture as a JSON object (tuples become lists); `tokenizer` only when one is named, so a
    config without one reads the same as before the field existed."""
    data = dataclasses.asdict(cfg)
    if not data["tokenizer"]:
        del data["tokenizer"]
    return json.dumps(data, sort_keys=True)


def config_from_json(text: str) -> ModelConfig:
    """Parse `config_to_json` output; raises BadRequest on anything else."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"model config is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BadRequest("model config must be a JSON object")
    names = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = set(data) - names
    if unknown:
        raise BadRequest(f"unknown model config fields: {sorted(unknown)}")
    if isinstance(data.get("eos_token_ids"), list):
        data["eos_token_ids"] = tuple(data["eos_token_ids"])
    try:
        return ModelConfig(**data)
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"bad model config: {exc}") from exc
