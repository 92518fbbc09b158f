"""Structure-aware fuzzing of ``Tape.from_bytes`` (hypothesis over bytes).

The random-corruption test (test_serialize.py) flips bytes and is stopped by the CRC. Here the
mutations are made *behind* the checksum: hypothesis edits the header counts, individual fields
of operations (opcode, flags, offsets, sizes, broadcast/matrix parameters), index-pool entries,
guard triples and the JSON metadata of real tapes (elementwise, broadcasting, reductions,
matmul, gather/scatter, where, guards, a Python-rule call), or splices and truncates sections,
then recomputes the CRC so the bytes reach the parser and ``validate``. Every load must either
raise ValueError/TypeError or give a tape on which all four sweeps run without crashing (a
crash kills the test process; under the sanitizer build, .ci/sanitize, any out-of-bounds access
aborts it). Values computed on a mutated tape are not checked, only safety.

Budget: ``TAPEGRAD_FUZZ`` examples per test (default 2000). Long run:

    TAPEGRAD_FUZZ=200000 python -m pytest tests/test_fuzz_bytes.py -q
"""
import os
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import tapegrad as tg
from tapegrad._core import sweeps
from tapegrad._core.tape import Tape, OP_DTYPE, OP_COUNT_, OPCODES, MAGIC_BYTES

N_FUZZ = int(os.environ.get("TAPEGRAD_FUZZ", "2000"))
FUZZ = settings(max_examples=N_FUZZ, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
MAX_WORK = 1 << 16
STATS = {"loads": 0, "accepted": 0, "rejected": 0}

MAGIC_LEN = 8
HEAD = 9 * 8
OPSIZE = OP_DTYPE.itemsize
FIELDS = {name: OP_DTYPE.fields[name][1] for name in OP_DTYPE.names}   # byte offsets in an op
INTERESTING = [0, 1, 2, 3, 4, 7, 8, 12, 16, -1, -2, 2 ** 31 - 1, 2 ** 31, 2 ** 32, 2 ** 40,
               2 ** 40 + 1, 2 ** 62, 2 ** 63 - 1, -2 ** 63, 1 << 20, 65535, 65536]


def _seed_tapes():
    A = np.linspace(-1, 1, 12).reshape(3, 4)
    progs = [
        (lambda x: np.sum(np.sin(x) * x), np.ones(4)),
        (lambda x: np.sum((x[:, None] * x[None, :]) @ A.T[:4, :3]) + np.max(x), np.arange(4.0)),
        (lambda x: np.prod(x.reshape(2, 2), axis=0).sum() + np.min(x[::-1][[0, 2, 2]]), np.ones(4) + 0.5),
        (lambda x: np.sum(np.where(x > 0, x * x, -x)) + (x[0] if x[1] > 0 else x[2]), np.ones(4)),
        (lambda x: np.concatenate([np.tanh(x), np.stack([x, x]).ravel()]), np.ones(3)),
        (lambda x: np.sum(np.linalg.inv(x.reshape(2, 2) + 3 * np.eye(2))), np.arange(4.0)),
        (lambda x: np.sum(np.maximum(x, x.mean()) ** 2.5) + np.logaddexp(x, 1.0).sum(), np.ones(5)),
        # fused gradient tails (>= 4096 elements): alone (read in place), after a prefix and
        # before post ops (a mean, a penalty), and with a guard
        (lambda x: np.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2), np.ones(4100)),
        (lambda x: np.mean((np.tanh(x * np.sum(x[:3])) - 0.3) ** 2) + 0.1 * np.sum(x[:3] ** 2),
         np.full(4100, 0.1)),
        (lambda x: np.log(np.sum(np.exp(-x * x)) + 1.0) if x[0] > 0 else np.sum(x),
         np.full(4100, 0.2)),
    ]
    out = []
    for f, x in progs:
        try:
            out.append(tg.record(f, x).to_bytes())
        except Exception:  # an op a seed relies on may be unsupported in this build
            continue
    t = Tape()
    t.alloc(3)
    t.set_io(1, 2, 1)
    t.add_op(0, 0, 1, 0, 0, 0, 1)
    t.add_op(OPCODES["add"], 0, 2, 0, 1, 0, 1, 1, 1, 1, 1)
    out.append(t.validate().to_bytes())
    return out


SEEDS = _seed_tapes()


def _put(fmt, data, off, val):
    """struct.pack_into that skips fields a splice has moved past the end."""
    if 0 <= off and off + struct.calcsize(fmt) <= len(data):
        struct.pack_into(fmt, data, off, val)


def _recrc(body):
    body = bytes(body)
    return body + struct.pack("<I", zlib.crc32(body))


def _sections(data):
    head = struct.unpack_from("<9q", data, MAGIC_LEN)
    nops, nidx, ncon, nguard = head[:4]
    ops = MAGIC_LEN + HEAD
    idx = ops + nops * OPSIZE
    con = idx + nidx * 8
    gua = con + ncon * 8
    meta = gua + nguard * 8
    return head, ops, idx, con, gua, meta


ints64 = st.one_of(st.sampled_from(INTERESTING), st.integers(-2 ** 63, 2 ** 63 - 1),
                   st.integers(-4, 300))


@st.composite
def mutations(draw):
    data = bytearray(draw(st.sampled_from(SEEDS))[:-4])
    head, ops, idx, con, gua, meta = _sections(data)
    nops, nidx, ncon, nguard = head[:4]
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["op", "op", "op", "opcode", "header", "index", "guard",
                                     "const", "meta", "splice", "byte"]))
        if kind in ("op", "opcode") and nops:
            k = draw(st.integers(0, nops - 1))
            base = ops + k * OPSIZE
            if kind == "opcode":
                _put("<i", data, base + FIELDS["code"], draw(st.integers(-1, OP_COUNT_)))
                continue
            field = draw(st.sampled_from(["flags", "out", "a", "b", "c", "n"] + [f"p{j}" for j in range(6)]))
            if field == "flags":
                _put("<i", data, base + FIELDS["flags"], draw(st.integers(-1, 9)))
            elif field.startswith("p"):
                _put("<q", data, base + FIELDS["p"] + 8 * int(field[1]), draw(ints64))
            else:
                _put("<q", data, base + FIELDS[field], draw(ints64))
        elif kind == "header":
            j = draw(st.integers(4, 7))   # nwork, nin, out_off, out_n (counts change the layout)
            _put("<q", data, MAGIC_LEN + 8 * j, draw(ints64))
        elif kind == "index" and nidx:
            _put("<q", data, idx + 8 * draw(st.integers(0, nidx - 1)), draw(ints64))
        elif kind == "guard" and nguard:
            _put("<q", data, gua + 8 * draw(st.integers(0, nguard - 1)), draw(ints64))
        elif kind == "const" and ncon:
            _put("<d", data, con + 8 * draw(st.integers(0, ncon - 1)),
                             draw(st.sampled_from([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e308, 5e-324])))
        elif kind == "meta":
            blob = draw(st.sampled_from([b"{}", b"[]", b'{"meta": null, "calls": [["inv", {}]]}',
                                         b'{"meta": null, "calls": [["nope", []]]}',
                                         b'{"meta": null, "calls": [["inv", {"in_shapes": [[2, 2]]}]]}',
                                         b'{"meta": 1, "calls": 5}', b"\xff\xfe", b"[" * 5000]))
            data = data[:meta] + blob
            _put("<q", data, MAGIC_LEN + 8 * 8, len(blob))
        elif kind == "splice":
            a = draw(st.integers(MAGIC_LEN + HEAD, len(data)))
            b = draw(st.integers(a, min(len(data), a + 64)))
            data = data[:a] + draw(st.binary(max_size=64)) + data[b:]
        else:
            pos = draw(st.integers(0, len(data) - 1))
            data[pos] = draw(st.integers(0, 255))
    return _recrc(data)


def _exercise(t):
    """Run every sweep on a loaded tape; only crashes matter, so Python errors are allowed."""
    r = np.random.default_rng(0)
    x = r.standard_normal(t.nin)
    try:
        w = sweeps.forward(t, x)
        sweeps.guards_ok(t, w)
        wb = sweeps.reverse(t, w, np.ones(t.out_n))
        wd = sweeps.tangent(t, w, r.standard_normal((2, t.nin)))
        sweeps.tangent_of_reverse(t, w, wd, wb)
        if t.out_n == 1:
            for value in (True, False):
                sweeps.value_and_grad(t, x, np.empty(max(t.nwork, 1)), np.empty(max(t.nwork, 1)),
                                      np.empty(t.nin), value)
            sweeps.grad_fast(t, x, x.shape)
    except (ValueError, TypeError, np.linalg.LinAlgError, FloatingPointError, MemoryError):
        pass


def _load(data):
    STATS["loads"] += 1
    try:
        t = Tape.from_bytes(data, max_work=MAX_WORK)
    except (ValueError, TypeError):
        STATS["rejected"] += 1
        return None
    STATS["accepted"] += 1
    _exercise(t)
    return t


@FUZZ
@given(mutations())
def test_mutated_tapes_load_safely(data):
    with np.errstate(all="ignore"):
        _load(data)
        try:
            tg.load(data, max_work=MAX_WORK)
        except (ValueError, TypeError, KeyError):
            pass


@FUZZ
@given(st.binary(max_size=512))
def test_random_bytes_are_rejected(blob):
    with pytest.raises((ValueError, TypeError)):
        Tape.from_bytes(blob)
    # behind a valid magic and checksum too
    body = MAGIC_BYTES + blob
    with np.errstate(all="ignore"):
        _load(_recrc(body))


def test_seeds_load_and_replay():
    assert len(SEEDS) >= 6
    for s in SEEDS:
        t = Tape.from_bytes(s)
        _exercise(t)


def teardown_module(module):
    import sys
    print(f"\nfuzz_bytes: {STATS}", file=sys.stderr)


def test_unused_operand_offsets_are_validated():
    """Regression (found by UBSan under .ci/sanitize): the sweeps form ``w + op.b`` even for a
    unary op; a loaded tape with a huge unused offset made that pointer arithmetic overflow."""
    for field in ("b", "c"):
        t = Tape()
        t.alloc(2)
        t.set_io(1, 1, 1)
        kw = {"a": 0, "b": 0, "c": 0}
        kw[field] = 2 ** 62
        t.add_op(0, 0, 1, kw["a"], kw["b"], kw["c"], 1)
        with pytest.raises(ValueError, match="operand offset"):
            t.validate()
