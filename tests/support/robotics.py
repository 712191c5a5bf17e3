"""Robotics-style TorchScript helpers, as Isaac Gym, Isaac Lab and legged_gym write them.

Those projects script dozens of small quaternion and transform helpers with
``@torch.jit.script``; under the profiling executor their elementwise chains become fused
kernels (``prim::TensorExprGroup``), which NVRTC compiles on a GPU: the path by which the
``--gpu-architecture`` failure reaches them.  Each helper here is a plain Python function (the
eager reference) and, through :data:`SCRIPTED`, the same source compiled by ``torch.jit.script``
(:func:`scripted` compiles a fresh copy: a compiled function keeps its optimised plans, so a
test that needs a first call gets its own).  :func:`step` calls the helpers in a loop, as a
simulator's physics step does; scripting it scripts (and inlines) them too.

Quaternions are ``(x, y, z, w)``, the layout of Isaac Gym's ``torch_utils``.
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable
from typing import Any

import torch

__all__ = [
    "EAGER",
    "SCRIPTED",
    "copysign",
    "fresh",
    "inputs",
    "normalize",
    "quat_mul",
    "quat_rotate",
    "quat_rotate_inverse",
    "scripted",
    "step",
    "wrap_to_pi",
]


def quat_mul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product of ``(..., 4)`` quaternions (the 8-multiplication form of Isaac Gym)."""
    shape = a.shape
    a = a.reshape(-1, 4)
    b = b.reshape(-1, 4)
    x1, y1, z1, w1 = a[:, 0], a[:, 1], a[:, 2], a[:, 3]
    x2, y2, z2, w2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    ww = (z1 + x1) * (x2 + y2)
    yy = (w1 - y1) * (w2 + z2)
    zz = (w1 + y1) * (w2 - z2)
    xx = ww + yy + zz
    qq = 0.5 * (xx + (z1 - x1) * (x2 - y2))
    w = qq - ww + (z1 - y1) * (y2 - z2)
    x = qq - xx + (x1 + w1) * (x2 + w2)
    y = qq - yy + (w1 - x1) * (y2 + z2)
    z = qq - zz + (z1 + y1) * (w2 - x2)
    return torch.stack([x, y, z, w], dim=-1).view(shape)


def quat_rotate(q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Rotate the ``(..., 3)`` vectors *v* by the unit quaternions *q* (broadcasting)."""
    q_w = q[..., 3:4]
    q_vec = q[..., :3]
    a = v * (2.0 * q_w * q_w - 1.0)
    b = torch.cross(q_vec.expand_as(v), v, dim=-1) * q_w * 2.0
    c = q_vec * (q_vec * v).sum(dim=-1, keepdim=True) * 2.0
    return a + b + c


def quat_rotate_inverse(q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Rotate *v* by the inverse (conjugate) of the unit quaternions *q*."""
    q_w = q[..., 3:4]
    q_vec = q[..., :3]
    a = v * (2.0 * q_w * q_w - 1.0)
    b = torch.cross(q_vec.expand_as(v), v, dim=-1) * q_w * 2.0
    c = q_vec * (q_vec * v).sum(dim=-1, keepdim=True) * 2.0
    return a - b + c


def normalize(x: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """Scale the last dimension to unit length (zero vectors stay zero)."""
    return x / x.norm(p=2.0, dim=-1).clamp(min=eps).unsqueeze(-1)


def wrap_to_pi(angles: torch.Tensor) -> torch.Tensor:
    """Angles into ``[-pi, pi]`` (legged_gym's ``wrap_to_pi``)."""
    wrapped = torch.remainder(angles, 2.0 * math.pi)
    return wrapped - 2.0 * math.pi * (wrapped > math.pi).to(angles.dtype)


def copysign(a: float, b: torch.Tensor) -> torch.Tensor:
    """``|a|`` with the sign of each element of *b* (legged_gym's ``copysign``)."""
    return torch.abs(torch.full_like(b, a)) * torch.sign(b)


def step(
    quat: torch.Tensor,
    pos: torch.Tensor,
    lin_vel: torch.Tensor,
    ang_vel: torch.Tensor,
    dt: float,
    steps: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """*steps* integration steps of rigid bodies: orientation from the angular velocity,
    position from the body-frame linear velocity; returns the new orientation, position, the
    heading wrapped to pi and the body-frame gravity with its sign pattern."""
    gravity = torch.zeros_like(lin_vel)
    gravity[..., 2] = -1.0
    heading = torch.zeros_like(pos[..., 0])
    for _ in range(steps):
        spin = torch.cat([ang_vel * (0.5 * dt), torch.zeros_like(ang_vel[..., :1])], dim=-1)
        quat = normalize(quat + quat_mul(spin, quat))
        pos = pos + quat_rotate(quat, lin_vel) * dt
        forward = quat_rotate(quat, torch.ones_like(lin_vel))
        heading = wrap_to_pi(heading + torch.atan2(forward[..., 1], forward[..., 0]) * dt)
    projected = quat_rotate_inverse(quat, gravity)
    return quat, pos, heading, copysign(1.0, projected)


#: name -> eager function.
EAGER: dict[str, Callable[..., Any]] = {
    fn.__name__: fn
    for fn in (quat_mul, quat_rotate, quat_rotate_inverse, normalize, wrap_to_pi, copysign, step)
}


def fresh(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A new function object with *fn*'s code: ``torch.jit.script`` compiles it as a function of
    its own (a mangled name, its own executor and plans).  Scripting *fn* itself again hands
    back the compiled function already made for it, with the plans it already has."""
    return types.FunctionType(
        fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__
    )


def scripted(name: str) -> Any:
    """A freshly scripted copy of the helper *name* (its own plans, its own profiling runs)."""
    return torch.jit.script(fresh(EAGER[name]))


#: name -> the helper compiled once by ``torch.jit.script`` (what the projects' decorator does).
SCRIPTED: dict[str, Any] = {name: scripted(name) for name in EAGER}


def _quat(n: tuple[int, ...], dtype: torch.dtype, gen: torch.Generator) -> torch.Tensor:
    raw = torch.randn(*n, 4, generator=gen, dtype=torch.float64)
    return (raw / raw.norm(dim=-1, keepdim=True)).to(dtype)


def inputs(name: str, dtype: torch.dtype, seed: int = 0) -> list[tuple[str, tuple[Any, ...]]]:
    """``[(label, args), ...]`` for the helper *name* in *dtype*: random values, special values
    (-0.0, inf, nan, subnormals where the helper is elementwise), empty, 0-dim where the helper
    takes it, broadcast and strided (non-contiguous) operands."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype)

    tiny = torch.finfo(dtype).tiny
    special = torch.tensor(
        [0.0, -0.0, math.inf, -math.inf, math.nan, tiny / 4, -tiny / 4, 1e-30, -7.5, 3.5],
        dtype=torch.float64,
    ).to(dtype)
    cases: list[tuple[str, tuple[Any, ...]]] = []
    if name == "quat_mul":
        a, b = _quat((33,), dtype, gen), _quat((33,), dtype, gen)
        cases += [
            ("random", (a, b)),
            ("batched (3, 11, 4)", (a.reshape(3, 11, 4), b.reshape(3, 11, 4))),
            ("empty", (a[:0], b[:0])),
            ("single (4,)", (a[0], b[0])),
            ("special", (special[:8].reshape(2, 4), special[2:].reshape(2, 4))),
            ("signed zeros", (torch.tensor([[-0.0, 0.0, -0.0, 1.0]], dtype=dtype), a[:1])),
        ]
    elif name in ("quat_rotate", "quat_rotate_inverse"):
        q, v = _quat((40,), dtype, gen), rand(40, 3)
        wide = rand(40, 6)
        cases += [
            ("random", (q, v)),
            ("broadcast q (1, 4)", (q[:1], v)),
            ("strided v", (q, wide[:, ::2])),
            ("empty", (q[:0], v[:0])),
            ("special", (special[:8].reshape(2, 4), special[4:10].reshape(2, 3))),
            ("signed zeros", (torch.tensor([[0.0, 0.0, 0.0, -1.0]], dtype=dtype), -v[:1].abs())),
        ]
    elif name == "normalize":
        x = rand(25, 4)
        cases += [
            ("random", (x,)),
            ("strided", (rand(25, 8)[:, 1::2],)),
            ("zero vectors", (torch.zeros(3, 4, dtype=dtype) * -1.0,)),
            ("special", (special[:8].reshape(2, 4),)),
            ("empty", (x[:0],)),
            ("1-d", (x[0],)),
        ]
    elif name == "wrap_to_pi":
        x = rand(64) * 20.0
        cases += [
            ("random", (x,)),
            ("0-dim", (torch.tensor(7.0, dtype=dtype),)),
            ("special", (special,)),
            ("strided 2-d", (rand(8, 16)[:, ::3] * 9.0,)),
            ("empty", (x[:0],)),
            ("multiples of pi", (torch.arange(-8, 9, dtype=torch.float64).mul(math.pi).to(dtype),)),
        ]
    elif name == "copysign":
        x = rand(64)
        cases += [
            ("random", (2.5, x)),
            ("negative magnitude", (-0.75, x)),
            ("0-dim", (3.0, torch.tensor(-2.0, dtype=dtype))),
            ("special", (1.5, special)),
            ("strided", (4.0, rand(6, 10)[:, ::2])),
            ("empty", (1.0, x[:0])),
        ]
    elif name == "step":
        n = 16
        cases += [
            (
                "16 bodies, 5 steps",
                (_quat((n,), dtype, gen), rand(n, 3), rand(n, 3), rand(n, 3), 0.01, 5),
            ),
            (
                "4x4 bodies, 3 steps",
                (_quat((4, 4), dtype, gen), rand(4, 4, 3), rand(4, 4, 3), rand(4, 4, 3), 0.02, 3),
            ),
            ("0 bodies", (_quat((0,), dtype, gen), rand(0, 3), rand(0, 3), rand(0, 3), 0.01, 2)),
        ]
    else:
        raise KeyError(f"no helper {name!r}; the helpers are {sorted(EAGER)}")
    return cases
