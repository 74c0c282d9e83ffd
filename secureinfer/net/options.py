"""gRPC settings every connection of the network uses, at nodes and clients alike: message caps and keepalive."""

from __future__ import annotations


def grpc_options(max_message_bytes: int) -> list[tuple[str, int]]:
    """Message caps and keepalive for servers and channels alike (a dead peer is noticed within seconds)."""
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 10_000),
        ("grpc.keepalive_timeout_ms", 5_000),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.keepalive_permit_without_calls", 1),
    ]


def server_options(max_message_bytes: int) -> list[tuple[str, int]]:
    """`grpc_options` plus tolerance for the clients' keepalive pings (else: GOAWAY too_many_pings)."""
    return grpc_options(max_message_bytes) + [
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
        ("grpc.http2.max_ping_strikes", 0),
    ]
