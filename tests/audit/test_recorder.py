"""The audit recorder: an auditing channel records what it receives; a frame log round-trips through a directory."""

from __future__ import annotations

import torch

from secureinfer.mpc.comm import MemoryNetwork, Message
from secureinfer.mpc.comm.audit import FrameLog, Recorder, read_log


def test_auditing_channel_records_inbound_only() -> None:
    net = MemoryNetwork(["a", "b"])
    recorder = Recorder(["b"])
    a, b = recorder.wrap(net.channel("a")), recorder.wrap(net.channel("b"))
    x = torch.arange(6, dtype=torch.int64)
    a.send("b", x, "t1")
    got = b.recv("a", "t1")
    x.add_(100)  # the record is a copy
    b.send("a", b"hi", "t2")
    assert a.recv("b", "t2") == b"hi" and torch.equal(got, torch.arange(6) + 100)
    [m] = recorder.inbound("b")
    assert (m.sender, m.tag) == ("a", "t1") and torch.equal(m.payload, torch.arange(6))
    assert recorder.inbound("a") == [] and recorder.names == ["b"]
    assert a.stats.bytes_sent == 48 and b.stats.rounds == 1


def test_frame_log_round_trip(tmp_path) -> None:
    log = FrameLog(tmp_path / "n0")
    t = torch.tensor([[1, -2], [3, 1 << 62]], dtype=torch.int64)
    log.record("P1", "P0", Message(t, 0, "mul"), session="s1")
    log.record("P1", "client", Message(b"step", 0, "ctrl"), session="s1")
    log.record("P1", "client", Message(torch.tensor([True, False]), 0, "m"), session="s1")
    back = read_log(tmp_path / "n0")
    assert [(m.receiver, m.sender, m.tag, m.session) for m in back] == [
        ("P1", "P0", "mul", "s1"), ("P1", "client", "ctrl", "s1"), ("P1", "client", "m", "s1")]
    assert torch.equal(back[0].payload, t) and back[1].payload == b"step"
    assert torch.equal(back[2].payload, torch.tensor([True, False]))
    assert back[0].raw == t.numpy().tobytes()
