"""Privacy checks that can fail: share distributions, a static scan for openings, and views independent of secrets.

(a) Each party's pair of input-share components is uniform and independent of the secret (chi-square, p = 1e-7 per
    test, critical values fixed in helpers.py); negative controls show that non-random "shares" are rejected.
(b) Only reveal.py opens values: an AST scan over mpc/ finds every expression that combines all three components
    and every use of a reveal* function; and a dynamic test records what each party receives during mul / mul_fixed /
    trunc / matmul under an all-zero and an all-large secret and checks that the two look the same (and uniform).
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
import torch

import secureinfer.mpc as mpc_pkg
from secureinfer.mpc import runtime
from secureinfer.mpc.party import EngineConfig
from secureinfer.mpc.prg import PRG, SEED_BYTES
from secureinfer.mpc.protocols import mul, sharing, trunc
from secureinfer.mpc.shares import AShare

from .helpers import (
    bit_frequency_failures,
    byte_histograms,
    chi2_critical,
    chi2_two_sample,
    chi2_uniform,
    view_independence_failures,
)

LARGE = 0x7EDC_BA98_7654_3210  # a secret with a distinctive top byte
N_CALLS, PER_CALL = 512, 16  # 8192 samples per component, from 512 independent sharings


# --- (a) input shares ----------------------------------------------------------------------------------------------


def pairs_from_split(split_fn, secret: int, expand=None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Share `secret` N_CALLS times with `split_fn`; return each party's (lo, hi) stacked as (N_CALLS, PER_CALL).

    `expand(seed, shape)` turns a seed into its component (default: the PRG, as `receive_input` does)."""
    expand = expand or (lambda seed, shape: PRG(seed).ring(shape))
    x = torch.full((PER_CALL,), secret, dtype=torch.int64)
    comps = [[], [], []]
    for _ in range(N_CALLS):
        seeds, x2 = split_fn(x)
        x0, x1 = (expand(s, x.shape) for s in seeds)
        assert torch.equal(x0 + x1 + x2, x), "the components do not reconstruct the secret"
        for j, c in enumerate((x0, x1, x2)):
            comps[j].append(c)
    c = [torch.stack(v) for v in comps]
    return [(c[i], c[(i + 1) % 3]) for i in range(3)]  # party i holds (x_i, x_{i+1})


def top_nibble(t: torch.Tensor) -> torch.Tensor:
    return (t >> 60) & 0xF


def pair_failures(lo: torch.Tensor, hi: torch.Tensor) -> list[str]:
    """Why one party's pair of components is not uniform on its own (empty when it passes every test)."""
    failures = []
    for name, comp in (("lo", lo), ("hi", hi)):
        hist = byte_histograms(comp)
        for byte in range(8):
            stat, dof = chi2_uniform(hist[byte])
            if stat > chi2_critical(dof):
                failures.append(f"{name} byte {byte} not uniform (chi2 {stat:.0f})")
        bits = bit_frequency_failures(comp)
        if bits:
            failures.append(f"{name} bits {bits} biased")
        # Across independent sharings (the first element of every call): catches reused or constant seeds.
        stat, dof = chi2_uniform(torch.bincount(top_nibble(comp[:, 0]), minlength=16))
        if stat > chi2_critical(dof):
            failures.append(f"{name} not uniform across sharings (chi2 {stat:.0f})")
    joint = torch.bincount((top_nibble(lo) * 16 + top_nibble(hi)).reshape(-1), minlength=256)
    stat, dof = chi2_uniform(joint)  # the two components are independent of each other
    if stat > chi2_critical(dof):
        failures.append(f"(lo, hi) not jointly uniform (chi2 {stat:.0f})")
    return failures


def secret_dependence_failures(pairs_a, pairs_b) -> list[str]:
    """Two-sample tests between the shares of two secrets, per party and component (byte and joint histograms)."""
    failures = []
    for i in range(3):
        for k, name in enumerate(("lo", "hi")):
            ha, hb = byte_histograms(pairs_a[i][k]), byte_histograms(pairs_b[i][k])
            for byte in range(8):
                stat, dof = chi2_two_sample(ha[byte], hb[byte])
                if stat > chi2_critical(dof):
                    failures.append(f"P{i} {name} byte {byte} depends on the secret (chi2 {stat:.0f})")
        joint = [torch.bincount((top_nibble(p[i][0]) * 16 + top_nibble(p[i][1])).reshape(-1), minlength=256)
                 for p in (pairs_a, pairs_b)]
        stat, dof = chi2_two_sample(*joint)
        if stat > chi2_critical(dof):
            failures.append(f"P{i} (lo, hi) depends on the secret (chi2 {stat:.0f})")
    return failures


def test_split_components_uniform_and_secret_independent():
    pairs0 = pairs_from_split(sharing.split, 0)
    pairs1 = pairs_from_split(sharing.split, LARGE)
    for secret, pairs in (("0", pairs0), ("LARGE", pairs1)):
        for i, (lo, hi) in enumerate(pairs):
            failures = pair_failures(lo, hi)
            assert not failures, f"secret {secret}, P{i}: {failures}"
    assert not secret_dependence_failures(pairs0, pairs1)


def test_send_input_shares_uniform_and_secret_independent(config):
    """The same checks on the pairs parties actually hold after `send_input` / `receive_input` (seed expansion)."""
    n = 8192

    def held(secret: int):
        x = torch.full((n,), secret, dtype=torch.int64)
        sim = runtime.simulate(lambda p, s: (s.lo.cpu(), s.hi.cpu()), inputs=[x], config=config)
        lo0, lo1, lo2 = (sim.outputs[i][0] for i in range(3))
        assert torch.equal(lo0 + lo1 + lo2, x)
        # Shape (N, 1): every element comes from the same sharing, so skip the across-sharings check by reshaping.
        return [(o[0].reshape(n, 1), o[1].reshape(n, 1)) for o in sim.outputs]

    pairs0, pairs1 = held(0), held(LARGE)
    for pairs in (pairs0, pairs1):
        for i, (lo, hi) in enumerate(pairs):
            failures = [f for f in pair_failures(lo, hi) if "across sharings" not in f]
            assert not failures, f"P{i}: {failures}"
    assert not secret_dependence_failures(pairs0, pairs1)


# Negative controls: broken "sharings" that the same checks must reject.


def split_constant_seeds(x):
    seeds = [b"\x01" * SEED_BYTES, b"\x02" * SEED_BYTES]  # the same seeds every time
    x0, x1 = (PRG(s).ring(x.shape) for s in seeds)
    return seeds, x - x0 - x1


def split_equal_components(x):
    seed = os.urandom(SEED_BYTES)
    x0 = PRG(seed).ring(x.shape)
    return [seed, seed], x - 2 * x0  # x_1 = x_0


SHORT = (1 << 56) - 1


def expand_short(seed: bytes, shape) -> torch.Tensor:
    return PRG(seed).ring(shape) & SHORT


def split_short_masks(x):
    # Components drawn from 56-bit randomness: x_2 = x - x_0 - x_1 keeps x's top byte (up to a borrow).
    seeds = [os.urandom(SEED_BYTES), os.urandom(SEED_BYTES)]
    x0, x1 = (expand_short(s, x.shape) for s in seeds)
    return seeds, x - x0 - x1


def test_checks_reject_non_random_shares():
    broken = {
        "constant seeds": (split_constant_seeds, None),
        "x_1 = x_0": (split_equal_components, None),
        "56-bit masks": (split_short_masks, expand_short),
    }
    for name, (split_fn, expand) in broken.items():
        pairs = pairs_from_split(split_fn, 0, expand)
        assert any(pair_failures(lo, hi) for lo, hi in pairs), f"{name}: a broken sharing passed the checks"
    short_a = pairs_from_split(split_short_masks, 0, expand_short)
    short_b = pairs_from_split(split_short_masks, LARGE, expand_short)
    assert secret_dependence_failures(short_a, short_b), "dependence on the secret was not detected"


def test_constant_share_is_rejected():
    """The simplest helper assertion: an all-zero 'component' fails the uniformity checks; fresh PRG output passes."""
    zeros = torch.zeros(N_CALLS, PER_CALL, dtype=torch.int64)
    good = PRG.fresh().ring((N_CALLS, PER_CALL))
    assert pair_failures(zeros, good)
    assert pair_failures(good, good)  # identical components are not independent
    assert not pair_failures(good, PRG.fresh().ring((N_CALLS, PER_CALL)))


# --- (b) static scan: who opens values -----------------------------------------------------------------------------

MPC_ROOT = Path(mpc_pkg.__file__).resolve().parent
# The explicit, short list of files allowed to combine all three components or to use reveal* functions.
ALLOWED_OPENERS = {"protocols/reveal.py"}
# Files that hand a computation's result to its owner (the client), and may do only that: open to the owner
# outside the parties (reveal_to_owner / reveal_at_owner), never to a party.
ALLOWED_OWNER_OUTPUT = {"models/serving.py", "models/batching.py"}  # batching: each member's rows to its own client
OWNER_OUTPUT_USES = ("calls reveal.reveal_to_owner", "calls reveal.reveal_at_owner", "imports ['reveal'")


def _chain(node: ast.AST, op_type: type) -> list[ast.AST]:
    """The operands of a flat chain of one binary operator (a + b + c -> [a, b, c])."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, op_type):
        return _chain(node.left, op_type) + _chain(node.right, op_type)
    return [node]


def _combines_three(node: ast.BinOp) -> bool:
    """Whether a +/^ chain adds a share's lo and hi and a third term, or parts[0], parts[1] and parts[2]."""
    if not isinstance(node.op, (ast.Add, ast.BitXor)):
        return False
    operands = _chain(node, type(node.op))
    if len(operands) < 3:
        return False
    seen: dict[str, set] = {}
    for op in operands:
        if isinstance(op, ast.Attribute) and op.attr in ("lo", "hi"):
            seen.setdefault(ast.unparse(op.value), set()).add(op.attr)
        elif isinstance(op, ast.Subscript) and isinstance(op.slice, ast.Constant) and op.slice.value in (0, 1, 2):
            seen.setdefault(ast.unparse(op.value) + "[]", set()).add(op.slice.value)
    return any(v == {"lo", "hi"} or v == {0, 1, 2} for v in seen.values())


def _uses_reveal(node: ast.AST) -> str | None:
    """A description if `node` calls or imports a reveal* function or the reveal module."""
    if isinstance(node, ast.Call):
        f = node.func
        name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
        if name.startswith("reveal"):
            return f"calls {ast.unparse(f)}"
    if isinstance(node, ast.ImportFrom):
        names = [a.name for a in node.names]
        if (node.module or "").split(".")[-1] == "reveal" or any(n.startswith("reveal") for n in names):
            return f"imports {names} from {node.module}"
    if isinstance(node, ast.Import) and any(a.name.split(".")[-1] == "reveal" for a in node.names):
        return "imports the reveal module"
    return None


def scan_source(source: str) -> tuple[set[str], list[str]]:
    """Functions (qualified names) that combine all three components, and reveal uses (with line numbers)."""
    tree = ast.parse(source)
    combiners, uses = set(), []

    def visit(node: ast.AST, scope: str) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            scope = f"{scope}.{node.name}" if scope else node.name
        if isinstance(node, ast.BinOp) and _combines_three(node):
            combiners.add(scope or "<module>")
        use = _uses_reveal(node)
        if use:
            uses.append(f"line {node.lineno} in {scope or '<module>'}: {use}")
        for child in ast.iter_child_nodes(node):
            visit(child, scope)

    visit(tree, "")
    return combiners, uses


def scan_mpc() -> dict[str, tuple[set[str], list[str]]]:
    found = {}
    for path in sorted(MPC_ROOT.rglob("*.py")):
        rel = path.relative_to(MPC_ROOT).as_posix()
        found[rel] = scan_source(path.read_text())
    return found


def test_only_reveal_py_combines_all_three_components():
    found = scan_mpc()
    offenders = {rel: sorted(c) for rel, (c, _) in found.items() if c and rel not in ALLOWED_OPENERS}
    assert not offenders, f"functions outside {ALLOWED_OPENERS} combine all three share components: {offenders}"
    # Positive control: the scan does see reveal.py's openings (so it is not vacuous).
    combiners, _ = found["protocols/reveal.py"]
    assert {"_combine", "reveal_at_owner"} <= combiners, combiners


def _owner_output_only(uses: list[str]) -> bool:
    return all(any(ok in use for ok in OWNER_OUTPUT_USES) for use in uses)


def test_reveal_used_only_in_allowed_places():
    found = scan_mpc()
    offenders = {
        rel: u for rel, (_, u) in found.items()
        if u and rel not in ALLOWED_OPENERS and not (rel in ALLOWED_OWNER_OUTPUT and _owner_output_only(u))
    }
    assert not offenders, f"reveal* used outside {ALLOWED_OPENERS} (or beyond owner output): {offenders}"
    # Negative control: opening to a party is not an owner output, even in an owner-output file.
    assert not _owner_output_only(["line 1 in f: calls reveal.reveal", "line 2 in f: calls reveal.reveal_to_owner"])


def test_static_scan_catches_openings():
    bad = '''
def leak(p, x):
    m = p.recv(p.prev)
    return x.hi + m + x.lo

def leak_parts(parts):
    return parts[2] ^ parts[0] ^ parts[1]

class Layer:
    def forward(self, p, x):
        from ..protocols.reveal import reveal as open_it
        return open_it(p, x)

def uses_module(p, x):
    return reveal.reveal_to(p, x, 0)
'''
    combiners, uses = scan_source(bad)
    assert combiners == {"leak", "leak_parts"}
    # The aliased call open_it(...) is not recognised by name, but its import is; plus the reveal.reveal_to call.
    assert len(uses) == 2 and "imports ['reveal']" in uses[0] and "reveal.reveal_to" in uses[1], uses
    benign = '''
def cross(x, y):
    return x.lo * (y.lo + y.hi) + x.hi * y.lo

def local_pair(x, r):
    return x.lo + x.hi, r[0] + r[1]
'''
    assert scan_source(benign) == (set(), [])


# Files allowed non-cryptographic randomness, each with the reason (explicit and short).
ALLOWED_PLAIN_RANDOM = {
    "models/sampling.py": "client-side token sampling on logits the client alone has opened; not share randomness",
}


def test_no_non_cryptographic_randomness_in_mpc():
    """Secret randomness comes only from the AES PRG: no torch.rand*/randint/randperm, `random` or numpy.random."""
    banned_attrs = {"rand", "randn", "randint", "randperm", "rand_like", "randn_like", "randint_like", "bernoulli",
                    "normal", "multinomial"}
    offenders = []
    for path in sorted(MPC_ROOT.rglob("*.py")):
        if path.relative_to(MPC_ROOT).as_posix() in ALLOWED_PLAIN_RANDOM:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in banned_attrs and \
                    ast.unparse(node.value) in ("torch", "np", "numpy"):
                offenders.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
            if isinstance(node, ast.Attribute) and node.attr == "random" and ast.unparse(node.value) in ("np", "numpy"):
                offenders.append(f"{path.name}:{node.lineno} numpy.random")
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                if any(m == "random" or m.startswith("numpy.random") for m in mods):
                    offenders.append(f"{path.name}:{node.lineno} imports {mods}")
    assert not offenders, offenders


# --- (b) dynamic: what each party receives does not depend on the secret ------------------------------------------

N = 4096


def ring_const(value: int, shape=(N,)) -> torch.Tensor:
    return torch.full(shape, value, dtype=torch.int64)


PUBLIC_W = (torch.arange(8 * 32, dtype=torch.int64).reshape(8, 32) % 7 - 3) << 18  # a public weight matrix

CASES = {
    # name: (program, inputs under secret A = all zero, inputs under secret B = all large)
    "mul": (lambda p, x, y: mul.mul(p, x, y), [ring_const(0)] * 2, [ring_const(LARGE), ring_const(-LARGE)]),
    "mul_fixed": (lambda p, x, y: mul.mul_fixed(p, x, y), [torch.zeros(N, dtype=torch.float64)] * 2,
                  [torch.full((N,), 8191.0, dtype=torch.float64), torch.full((N,), -8191.0, dtype=torch.float64)]),
    "square_fixed": (lambda p, x: mul.square_fixed(p, x), [torch.zeros(N, dtype=torch.float64)],
                     [torch.full((N,), -8191.0, dtype=torch.float64)]),
    "mul_public_fixed": (lambda p, x: mul.mul_public_fixed(p, x, 0.75), [torch.zeros(N, dtype=torch.float64)],
                         [torch.full((N,), 2.0**25, dtype=torch.float64)]),
    "trunc": (lambda p, x: trunc.trunc(p, x, 18), [ring_const(0)], [ring_const((1 << 62) - 1)]),
    "trunc_x3": (lambda p, x: trunc.trunc(p, trunc.trunc(p, trunc.trunc(p, x, 5), 7), 18),
                 [ring_const(0)], [ring_const(-(1 << 62) + 1)]),
    "trunc_replicated": (lambda p, x: trunc.trunc_replicated(p, x, 18), [ring_const(0)],
                         [ring_const((1 << 62) - 1)]),
    "matmul_public_weight": (lambda p, x: trunc.trunc_replicated(p, x.matmul_public(PUBLIC_W.to(x.lo.device)), 18),
                             [torch.zeros(4, 32, 8)], [torch.full((4, 32, 8), 900.0)]),
    "matmul": (lambda p, x, y: mul.matmul(p, x, y), [ring_const(0, (4, 32, 8)), ring_const(0, (8, 32))],
               [ring_const(LARGE, (4, 32, 8)), ring_const(-LARGE, (8, 32))]),
    "matmul_fixed": (lambda p, x, y: mul.matmul_fixed(p, x, y), [torch.zeros(4, 32, 8), torch.zeros(8, 32)],
                     [torch.full((4, 32, 8), 900.0), torch.full((8, 32), -900.0)]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_views_do_not_depend_on_secret(config, case):
    program, inputs_a, inputs_b = CASES[case]
    failures, report = view_independence_failures(program, inputs_a, inputs_b, runs=2, config=config)
    print(f"{case}: {report}")
    assert not failures, failures[:10]


def leaky_open(p, x: AShare) -> AShare:
    """A broken protocol: parties open x (as reveal does) and pass the plaintext on."""
    p.send(p.next, x.lo, "leak")
    opened = x.lo + x.hi + p.recv(p.prev, "leak")
    p.send(p.next, opened, "leak2")
    p.recv(p.prev, "leak2")
    return x


def unmasked_mul(p, x: AShare, y: AShare) -> AShare:
    """A broken protocol: mul without the zero-sharing mask, so each sent term is a product of shares."""
    z = x.lo * (y.lo + y.hi) + x.hi * y.lo
    p.send(p.prev, z, "mul")
    return AShare(z, p.recv(p.next, "mul"), p.index)


def test_view_check_rejects_leaky_protocols():
    config = EngineConfig()
    failures, _ = view_independence_failures(leaky_open, [ring_const(0)], [ring_const(LARGE)], config=config)
    assert any("depends on the secret" in f for f in failures), failures[:5]
    failures, _ = view_independence_failures(unmasked_mul, CASES["mul"][1], CASES["mul"][2], config=config)
    assert any("not uniform" in f for f in failures), failures[:5]
    # A program that receives nothing tests nothing, and says so.
    failures, _ = view_independence_failures(lambda p, x: x, [ring_const(0)], [ring_const(1)], config=config)
    assert failures == ["no messages were received: nothing to test"]
