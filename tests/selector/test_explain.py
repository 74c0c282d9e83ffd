"""selector/explain.py: REQUEST parsing (store models, explicit shapes, networks, links), and the rendering of an
explanation as text and JSON."""

from __future__ import annotations

import json

import pytest

from secureinfer.selector import explain
from secureinfer.selector.features import CommitteeOption, SelectorError, WorkerOption
from secureinfer.selector.selector import CandidateView, Explanation

from .test_evaluate import synthetic

NETWORK = {"nodes": [{"id": n, "matmul_gflops": 40, "cpu_count": 2} for n in "abc"]
           + [{"id": "g", "device": "cuda:0 (NVIDIA H200)", "matmul_gflops": 40000, "memory_gb": 140}],
           "committees": [{"id": "c1", "nodes": ["a", "b", "c"], "latency_ms": 2, "bandwidth_mbit": 100}],
           "workers": [{"node": "g", "latency_ms": 20}]}


def test_request_from_a_store_model_and_the_default_network(tmp_path):
    rows = synthetic()
    req, options = explain.parse_request('{"model": "m1", "seq_len": 8, "gen_tokens": 2, "max_error": 0.01, '
                                         '"link": "metro"}', rows)
    assert (req.arch, req.n_layers, req.hidden, req.vocab, req.n_params) == ("gpt2", 2, 16, 32, 10_000)
    assert req.secret_prompt and not req.open_model and req.max_error == 0.01 and req.task == "generate"
    assert [type(o) for o in options] == [CommitteeOption, WorkerOption]  # one node in the store: box/cpu
    assert options[0].link.latency_s == 2e-3 and options[0].link.bandwidth_bytes_per_s == 12.5e6
    assert len({n.node_id for n in options[0].nodes}) == 3
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"model": "m2", "seq_len": 4, "secret_prompt": False, "open_model": True}))
    req, options = explain.parse_request(str(path), rows)
    assert req.model == "m2" and not req.secret_prompt and req.gen_tokens == 1 and options[0].link.latency_s == 1e-4


def test_request_with_its_own_shape_and_network():
    text = json.dumps({"model": "new-bert", "arch": "bert", "n_layers": 6, "hidden": 384, "vocab": 30522,
                       "n_params": 22_700_000, "seq_len": 128, "network": NETWORK})
    req, options = explain.parse_request(text, synthetic())
    assert req.task == "embed" and req.gen_tokens == 0 and req.hidden == 384
    committee, worker = options
    assert committee.committee_id == "c1" and [n.node_id for n in committee.nodes] == ["a", "b", "c"]
    assert committee.link.bandwidth_bytes_per_s == 12.5e6
    assert worker.node.device.startswith("cuda") and worker.link.latency_s == 0.02
    assert worker.link.bandwidth_bytes_per_s is None


@pytest.mark.parametrize("text, message", [
    ('{"model": "nope", "seq_len": 8}', "no rows in the store"),
    ('{"model": "m1"}', "seq_len"),
    ('{"model": "m1", "seq_len": 8, "colour": 1}', "unknown REQUEST fields"),
    ('{"model": "m1", "seq_len": 8, "link": "moon"}', "unknown link"),
    ('{"model": "m1", "seq_len": 8, "task": "dance"}', "task must be one of"),
    ('{"model": "m1", "seq_len": 0}', "seq_len must be >= 1"),
    ('[1, 2]', "must be a JSON object"),
    ('{"model": ', "not valid JSON"),
    ('no-such-file.json', "neither"),
    ('{"model": "m1", "seq_len": 8, "network": {"nodes": [{"id": "a"}]}}', "matmul_gflops"),
    ('{"model": "m1", "seq_len": 8, "network": {"nodes": [], "committees": [{"nodes": ["a", "b"]}]}}',
     "exactly three"),
    ('{"model": "m1", "seq_len": 8, "network": {"nodes": [], "workers": [{"node": "z"}]}}', "unknown node"),
    ('{"model": "m1", "seq_len": 8, "link": "lan", "network": {}}', "not both"),
])
def test_bad_requests_say_what_is_wrong(text, message):
    with pytest.raises(SelectorError, match=message):
        explain.parse_request(text, synthetic())


def _explanation():
    req, options = explain.parse_request('{"model": "m1", "seq_len": 8, "gen_tokens": 2, "max_error": 0.01}',
                                         synthetic())
    views = (CandidateView("secure-accurate-f18-cpu", "box/cpu@lan", "arm1", 1e-3, 2.0, 1.5, 0.1, -0.2, 1.66,
                           rank=1),
             CandidateView("secure-accurate-f16-cpu", "box/cpu@lan", "arm2", 2e-3, 2.1, 1.7, 0.0, 0.3, 1.7, rank=2),
             CandidateView("secure-fast-f18-cpu", "box/cpu@lan", "arm3", 0.05, constraint="accuracy",
                           reason="accuracy: expected error 0.05 > budget 0.01"),
             CandidateView("plain-fp32-cpu", "box/cpu", "arm4", 1e-6, constraint="privacy",
                           reason="privacy: a secret prompt never runs on fewer than three distinct parties"))
    return Explanation(req, tuple(options), views, predictor_rows=42, observations=3)


def test_render_text_and_json():
    exp = _explanation()
    text = explain.render_text(exp)
    assert "plan      secure-accurate-f18-cpu on box/cpu@lan: expected 1.66 s" in text
    assert "constraints: secret prompt, closed model (secret weights), max error 0.01, no deadline" in text
    assert "predictor trained on 42 rows, bandit after 3 outcomes" in text
    assert "  accuracy (1):\n    secure-fast-f18-cpu on box/cpu@lan: expected error 0.05 > budget 0.01" in text
    assert "  privacy (1):" in text and text.index("   1  secure-accurate-f18") < text.index("   2  secure")
    assert "... 1 more" in explain.render_text(exp, limit=1)
    doc = json.loads(json.dumps(explain.to_json(exp)))
    assert doc["plan"]["strategy"] == "secure-accurate-f18-cpu" and len(doc["ranked"]) == 2
    assert {r["constraint"] for r in doc["removed"]} == {"accuracy", "privacy"}
    assert doc["request"]["max_error"] == 0.01 and doc["options"][0]["committee"].startswith("box/cpu@")
