"""The performance store (secureinfer/perfstore/): round trip, queries, resumability keys, schema versions,
concurrency."""

from __future__ import annotations

import dataclasses
import sqlite3
import subprocess
import sys
import textwrap
import threading

import pytest

from secureinfer.perfstore import store as store_mod  # open_store reads the schema version and migrations here
from secureinfer.perfstore import COLUMN_NAMES, RunRecord, SchemaVersionError, StoreError, open_store, run_key


def record(i: int = 0, **changes) -> RunRecord:
    """A complete record, every optional outcome filled (booleans and NULLs included)."""
    base = RunRecord(
        key=run_key(i=i), timestamp=1_700_000_000.0 + i, model="tiny-gpt2", arch="gpt2", n_params=123456,
        n_layers=2, hidden=64, vocab=256, seq_len=8, batch=1, gen_tokens=4, task="generate", device="cpu",
        cpu_count=2, matmul_gflops=41.5, memory_bytes=24 * 2**30, host="box", latency_s=1e-4,
        bandwidth_bytes_per_s=125e6, mode="secure", strategy_name="secure-lean-f18-cpu",
        strategy_json='{"mode": "secure", "profile": "lean"}', status="ok", error=None, prefill_s=0.5,
        per_token_s=0.25, total_s=1.25, load_s=0.01, rounds=1400, prefill_rounds=350, bytes_per_party_max=1_000_000,
        bytes_per_party_sum=2_999_000, peak_rss_mb=300.5, peak_device_mb=None, max_abs_err=1e-3,
        min_cosine=0.999999, tokens_equal=True, repeat=0, steps_json="[]", env_json='{"torch": "x"}')
    return dataclasses.replace(base, **changes)


def test_round_trip_and_queries(tmp_path):
    path = tmp_path / "s.sqlite"
    with open_store(path) as st:
        rows = [record(0), record(1, mode="plaintext", strategy_name="plain-fp32-cpu", tokens_equal=False,
                                  rounds=None, bandwidth_bytes_per_s=None),
                record(2, status="error", error="ValueError: boom", total_s=None, tokens_equal=None,
                       model="minilm", arch="bert", task="embed", gen_tokens=0)]
        for r in rows:
            st.insert(r)
        assert len(st) == 3 and st.has(rows[0].key) and not st.has("nope")
    with open_store(path) as st:  # reopened: the same rows, same types
        got = st.query()
        assert got == rows
        assert isinstance(got[0].tokens_equal, bool) and got[1].tokens_equal is False and got[2].tokens_equal is None
        assert [r.key for r in st.query(mode="secure")] == [rows[0].key, rows[2].key]
        assert [r.key for r in st.query(status="error")] == [rows[2].key]
        assert [r.key for r in st.query(model=["tiny-gpt2", "x"], tokens_equal=False)] == [rows[1].key]
        assert [r.key for r in st.query(bandwidth_bytes_per_s=None)] == [rows[1].key]
        assert [r.key for r in st.query(order_by="-timestamp", limit=2)] == [rows[2].key, rows[1].key]
        assert st.count(status="ok") == 2 and st.query(model=[]) == []
        with pytest.raises(StoreError, match="unknown column"):
            st.query(colour="red")
        with pytest.raises(StoreError, match="already in the store"):
            st.insert(rows[0])
        st.insert(record(0, total_s=9.0), replace=True)
        assert st.query(key=rows[0].key)[0].total_s == 9.0 and len(st) == 3
        assert st.delete(rows[2].key) and not st.delete(rows[2].key)
        st.rename_key(rows[1].key, "renamed")
        assert st.has("renamed") and not st.has(rows[1].key)
        with pytest.raises(StoreError, match="already in the store"):
            st.rename_key("renamed", rows[0].key)
        with pytest.raises(StoreError, match="no run"):
            st.rename_key("absent", "x")
        st.set_meta("skipped:x", "why")
        assert st.meta()["skipped:x"] == "why" and st.meta()["schema_version"] == "1"
        with pytest.raises(StoreError):
            st.set_meta("schema_version", "7")


def test_record_validation():
    with pytest.raises(StoreError, match="status"):
        record(status="maybe")
    with pytest.raises(StoreError, match="mode"):
        record(mode="hybrid")


def test_schema_matches_record():
    """The frozen version-1 table has exactly RunRecord's columns, in order."""
    st = open_store(":memory:")
    assert tuple(r[1] for r in st._conn.execute("PRAGMA table_info(runs)")) == COLUMN_NAMES
    assert COLUMN_NAMES == tuple(f.name for f in dataclasses.fields(RunRecord))


def test_export_csv(tmp_path):
    st = open_store(tmp_path / "s.sqlite")
    st.insert(record(0))
    st.insert(record(1, peak_rss_mb=None, tokens_equal=False))
    out = tmp_path / "s.csv"
    assert st.export_csv(out) == 2
    lines = out.read_text().splitlines()
    assert lines[0].split(",") == list(COLUMN_NAMES) and len(lines) == 3
    import csv

    rows = list(csv.DictReader(out.open()))
    assert rows[0]["tokens_equal"] == "1" and rows[1]["tokens_equal"] == "0" and rows[1]["peak_rss_mb"] == ""
    assert st.export_csv(tmp_path / "e.csv", status="error") == 0


def test_run_key_is_deterministic():
    a = run_key(case={"model": "m", "seq_len": 8}, strategy={"mode": "secure", "frac_bits": 18}, link=[0.0, None])
    b = run_key(link=[0.0, None], strategy={"frac_bits": 18, "mode": "secure"}, case={"seq_len": 8, "model": "m"})
    assert a == b and len(a) == 32
    assert a != run_key(case={"model": "m", "seq_len": 8}, strategy={"mode": "secure", "frac_bits": 16},
                        link=[0.0, None])
    # Golden value: keys must not change between versions, or resuming a sweep would re-measure everything.
    assert run_key(x=1, y=[0.5, None], z="a") == "61974948f5699e61462ef20d425417d2"


def test_newer_schema_is_refused_and_older_migrated(tmp_path, monkeypatch):
    path = tmp_path / "s.sqlite"
    open_store(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(SchemaVersionError, match="schema version 99, newer than this secureinfer understands"):
        open_store(path)
    # A future version 2 with a migration from 1: an existing version-1 store is migrated in place, rows kept.
    old = tmp_path / "old.sqlite"
    with open_store(old) as st:
        st.insert(record(0))
    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", 2)
    monkeypatch.setattr(store_mod, "MIGRATIONS", {1: ["ALTER TABLE runs ADD COLUMN extra TEXT"]})
    st = store_mod.open_store(old)
    assert st.meta()["schema_version"] == "2" and len(st) == 1
    assert "extra" in [r[1] for r in st._conn.execute("PRAGMA table_info(runs)")]


def test_not_a_store_is_refused(tmp_path):
    path = tmp_path / "other.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="not a performance store"):
        open_store(path)
    bad = tmp_path / "junk.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError):
        open_store(bad)


WRITER = textwrap.dedent("""
    import dataclasses, sys
    sys.path.insert(0, {root!r})
    from tests.perfstore.test_store import record
    from secureinfer.perfstore import open_store, run_key
    st = open_store(sys.argv[1])
    w = int(sys.argv[2])
    for i in range(40):
        st.insert(record(0, key=run_key(writer=w, i=i), repeat=i))
""")


def test_concurrent_inserts_from_processes_and_threads(tmp_path):
    """Four processes and four threads (sharing one Store) insert into one fresh file at once: every row lands."""
    import pathlib

    path = tmp_path / "c.sqlite"
    root = str(pathlib.Path(__file__).resolve().parents[2])
    script = WRITER.format(root=root)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(path), str(w)]) for w in range(4)]
    st = open_store(path)
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        try:
            for i in range(40):
                st.insert(record(0, key=run_key(writer=w, i=i), repeat=i))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(10, 14)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    assert not errors
    assert len(st) == 8 * 40 and len(st.keys()) == 320
    assert st._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
