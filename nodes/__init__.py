"""The node daemon: a gRPC server that hosts models and serves sessions as a secure party or a plaintext worker.

    daemon.py       the server: start-up, servicers, gossip rounds, record sync, graceful stop
    config.py       NodeConfig, read from and written to TOML
    servicers.py    thin gRPC servicers: check the caller, hand the work on, map errors to statuses
    opening.py      checking a session's open request (role, committee, model, output, strategy) before it runs
    sessions.py     a session's life: its links, their pumps, the worker thread, abort; the open sessions
    dispatch.py     which engine program a session runs, and the secure model it computes with
    publishing.py   receiving an owner's weights and storing the hosted model
    batching.py     concurrent secure requests' steps run as one MPC forward
    store.py        the models this node hosts
    admission.py    per-client rate and concurrency limits
    records.py      the performance records: the Records service and anti-entropy with peers
    revocation.py   the CA's revocation list, checked on every call
    capability.py   what the node can do, measured at start
    errors.py       the one mapping from any error to a gRPC status
    malformed.py    undecodable requests end as INVALID_ARGUMENT
    metrics.py      Prometheus metrics
    logs.py         JSON-lines logs

What clients and nodes share (certificates, membership, frames, transport, wire formats, domain errors) lives in
`secureinfer.net`; the performance store in `secureinfer.perfstore`.
"""
