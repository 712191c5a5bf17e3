"""blackwell_compat.spectral: Jiterator-free magnitude, power, phase and polar on real views."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from blackwell_compat import spectral

INF = math.inf
NAN = math.nan
TINY32 = 1.401298464324817e-45  # smallest float32 subnormal
HUGE32 = 3.0e38

SPECIAL = [0.0, -0.0, 1.0, -2.5, INF, -INF, NAN, TINY32, -TINY32, 1e-30, 1e30, HUGE32]


def special_grid(dtype: torch.dtype) -> torch.Tensor:
    """Every (re, im) pair of special values as a complex tensor."""
    real_dtype = torch.float64 if dtype == torch.complex128 else torch.float32
    values = torch.tensor(SPECIAL, dtype=real_dtype)
    re, im = torch.meshgrid(values, values, indexing="ij")
    return torch.complex(re, im).to(dtype)


def same(a: torch.Tensor, b: torch.Tensor) -> None:
    """Equal values, nan where nan (assert_close with equal_nan and no tolerance)."""
    torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


# -- magnitude / power ----------------------------------------------------------------------


def test_magnitude_is_bit_identical_to_complex64_abs_on_special_values() -> None:
    z = special_grid(torch.complex64)
    same(spectral.magnitude(z), z.abs())


def test_magnitude_complex128_within_one_ulp_of_abs() -> None:
    # The CPU complex128 abs kernel and hypot may round differently (1 ulp); the defaults of
    # assert_close for float64 (rtol 1e-7) are far looser than that.
    z = special_grid(torch.complex128)
    torch.testing.assert_close(spectral.magnitude(z), z.abs(), equal_nan=True)
    g = torch.Generator().manual_seed(0)
    w = torch.randn(4096, dtype=torch.complex128, generator=g)
    diff = (spectral.magnitude(w) - w.abs()).abs()
    assert bool((diff <= torch.finfo(torch.float64).eps * w.abs()).all())


def test_magnitude_does_not_overflow_or_underflow_where_naive_formula_does() -> None:
    z = torch.tensor([3e30 + 4e30j, 3e-30 + 4e-30j], dtype=torch.complex64)
    naive = torch.sqrt(z.real**2 + z.imag**2)
    assert naive[0].isinf() and naive[1] == 0  # the widespread workaround fails here
    torch.testing.assert_close(spectral.magnitude(z), torch.tensor([5e30, 5e-30]))


def test_infinite_component_wins_over_nan() -> None:
    z = torch.complex(torch.tensor([INF, NAN]), torch.tensor([NAN, -INF]))
    assert spectral.magnitude(z).tolist() == [INF, INF]


def test_power_is_within_two_ulps_of_abs_squared() -> None:
    g = torch.Generator().manual_seed(1)
    for dtype in (torch.complex64, torch.complex128):
        z = torch.randn(64, 201, dtype=dtype, generator=g) * 100
        reference = z.abs() ** 2
        eps = torch.finfo(reference.dtype).eps
        assert bool(((spectral.power(z) - reference).abs() <= 2 * eps * reference).all())
        torch.testing.assert_close(spectral.power(z), reference)


def test_power_overflows_only_where_the_true_value_does() -> None:
    z = torch.tensor([1e19 + 1e19j, 3e-20 + 4e-20j, 1.8e19 + 0j, 2e19 + 0j])
    out = spectral.power(z)
    torch.testing.assert_close(out[:3], torch.tensor([2e38, 2.5e-39, 3.24e38]))
    assert out[3].isinf()  # 4e38 is beyond float32, for abs() ** 2 as well
    assert (z.abs() ** 2)[3].isinf()
    grid = special_grid(torch.complex64)
    ours, ref = spectral.power(grid), grid.abs() ** 2
    # Documented difference: inf paired with nan gives nan (abs() ** 2 gives inf).
    inf_nan = (grid.real.isinf() & grid.imag.isnan()) | (grid.real.isnan() & grid.imag.isinf())
    assert bool(ours[inf_nan].isnan().all()) and bool(ref[inf_nan].isinf().all())
    torch.testing.assert_close(ours[~inf_nan], ref[~inf_nan], equal_nan=True)
    assert spectral.power(torch.tensor([-3.0])).item() == 9.0


@pytest.mark.parametrize("dtype", [torch.complex32, torch.complex64, torch.complex128])
def test_output_dtype_is_the_matching_real_dtype(dtype: torch.dtype) -> None:
    z = torch.ones(3, dtype=torch.complex64).to(dtype)
    expected = {torch.complex32: torch.float16, torch.complex64: torch.float32}.get(
        dtype, torch.float64
    )
    assert spectral.magnitude(z).dtype == expected
    assert spectral.phase(z).dtype == expected
    assert spectral.power(z).dtype == expected


def test_complex32_magnitude_matches_upcast_reference() -> None:
    z = torch.tensor([3 + 4j, -1 + 0.5j, 0j], dtype=torch.complex64)
    half = z.to(torch.complex32)
    torch.testing.assert_close(spectral.magnitude(half), z.abs().half())


def test_real_inputs_use_the_real_kernels() -> None:
    x = torch.tensor([-2.0, 0.0, 3.0])
    same(spectral.magnitude(x), x.abs())
    same(spectral.phase(x), x.angle())


def test_empty_non_contiguous_and_batched_shapes() -> None:
    empty = torch.empty(0, 5, dtype=torch.complex64)
    assert spectral.magnitude(empty).shape == (0, 5)
    assert spectral.phase(empty).shape == (0, 5)
    g = torch.Generator().manual_seed(2)
    z = torch.randn(6, 8, dtype=torch.complex64, generator=g).t()  # non-contiguous
    assert not z.is_contiguous()
    same(spectral.magnitude(z), z.abs())
    torch.testing.assert_close(spectral.phase(z), z.angle())
    strided = torch.randn(10, dtype=torch.complex64, generator=g)[::3]
    same(spectral.magnitude(strided), strided.abs())


# -- phase ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_phase_matches_angle_on_special_values(dtype: torch.dtype) -> None:
    # atan2 and the complex angle kernel can differ by an ulp (atan2 is the more accurate:
    # for 1e-30+1e-30j it gives float32(pi/4) exactly, angle one ulp below); the assert_close
    # defaults cover that.
    z = special_grid(dtype)
    torch.testing.assert_close(spectral.phase(z), z.angle(), equal_nan=True)


def test_phase_respects_signed_zero() -> None:
    z = torch.complex(torch.tensor([-1.0, -1.0, 0.0, -0.0]), torch.tensor([0.0, -0.0, 0.0, 0.0]))
    result = spectral.phase(z)
    same(result, torch.tensor([math.pi, -math.pi, 0.0, math.pi]))
    same(result, z.angle())


# -- polar / unit phasor --------------------------------------------------------------------


def test_polar_matches_torch_polar() -> None:
    g = torch.Generator().manual_seed(3)
    mag = torch.rand(500, generator=g) * 40
    ang = (torch.rand(500, generator=g) - 0.5) * 20
    torch.testing.assert_close(spectral.polar(mag, ang), torch.polar(mag, ang))
    torch.testing.assert_close(spectral.unit_phasor(ang), torch.polar(torch.ones_like(ang), ang))


def test_polar_matches_complex_exp_form() -> None:
    g = torch.Generator().manual_seed(4)
    mag = torch.rand(3, 50, generator=g, dtype=torch.float64)
    ang = torch.randn(3, 50, generator=g, dtype=torch.float64)
    torch.testing.assert_close(spectral.polar(mag, ang), mag * torch.exp(ang * 1j))


def test_polar_broadcasts_and_roundtrips() -> None:
    mag = torch.tensor([[1.0], [2.0]])
    ang = torch.tensor([0.0, math.pi / 2, -math.pi / 4])
    z = spectral.polar(mag, ang)
    assert z.shape == (2, 3) and z.dtype == torch.complex64
    torch.testing.assert_close(spectral.magnitude(z), mag.expand(2, 3))
    torch.testing.assert_close(spectral.phase(z), ang.expand(2, 3))


def test_polar_rejects_complex_arguments_with_a_clear_error() -> None:
    with pytest.raises(TypeError, match="mag must be a real tensor"):
        spectral.polar(torch.ones(2, dtype=torch.complex64), torch.zeros(2))
    with pytest.raises(TypeError, match="angle must be a real tensor"):
        spectral.unit_phasor(torch.zeros(2, dtype=torch.complex64))


def test_polar_of_half_gives_complex32() -> None:
    out = spectral.polar(torch.ones(2, dtype=torch.float16), torch.zeros(2, dtype=torch.float16))
    assert out.dtype == torch.complex32


# -- property-based parity --------------------------------------------------------------------

finite32 = st.floats(allow_nan=False, allow_infinity=False, width=32)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(finite32, finite32), min_size=1, max_size=32))
def test_magnitude_and_phase_match_complex_kernels(pairs: list[tuple[float, float]]) -> None:
    re = torch.tensor([p[0] for p in pairs], dtype=torch.float32)
    im = torch.tensor([p[1] for p in pairs], dtype=torch.float32)
    z = torch.complex(re, im)
    same(spectral.magnitude(z), z.abs())
    torch.testing.assert_close(spectral.phase(z), z.angle())


# -- autograd -------------------------------------------------------------------------------


def _grad(fn, z: torch.Tensor) -> torch.Tensor:  # type: ignore[no-untyped-def]
    leaf = z.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(fn(leaf).sum(), leaf)
    return g


def test_magnitude_gradient_matches_abs_including_zero() -> None:
    z = torch.tensor([0j, 3 + 4j, -1e-20 + 0j, 2.5 - 1j], dtype=torch.complex64)
    reference = _grad(torch.abs, z)
    ours = _grad(spectral.magnitude, z)
    torch.testing.assert_close(ours, reference)
    assert ours[0] == 0  # plain hypot would give nan here


def test_phase_gradient_matches_angle_including_zero() -> None:
    z = torch.tensor([0j, 3 + 4j, -2 + 1e-3j, 1e-3 - 7j], dtype=torch.complex128)
    torch.testing.assert_close(_grad(spectral.phase, z), _grad(torch.angle, z))


def test_power_and_polar_gradients_match_complex_reference() -> None:
    g = torch.Generator().manual_seed(5)
    z = torch.randn(20, dtype=torch.complex128, generator=g)
    torch.testing.assert_close(_grad(spectral.power, z), _grad(lambda w: w.abs() ** 2, z))
    mag = torch.rand(20, dtype=torch.float64, generator=g).requires_grad_(True)
    ang = torch.randn(20, dtype=torch.float64, generator=g).requires_grad_(True)
    weights = torch.randn(20, dtype=torch.complex128, generator=g)

    def loss(out: torch.Tensor) -> torch.Tensor:
        return (out * weights).real.sum()

    ours = torch.autograd.grad(loss(spectral.polar(mag, ang)), (mag, ang))
    ref = torch.autograd.grad(loss(torch.polar(mag, ang)), (mag, ang))
    torch.testing.assert_close(ours, ref)


def test_second_derivative_exists() -> None:
    z = torch.tensor([3 + 4j, 1 - 1j], dtype=torch.complex128, requires_grad=True)
    (g,) = torch.autograd.grad(spectral.magnitude(z).sum(), z, create_graph=True)
    (gg,) = torch.autograd.grad(g.real.sum(), z)
    (rg,) = torch.autograd.grad(
        torch.autograd.grad(z.abs().sum(), z, create_graph=True)[0].real.sum(), z
    )
    torch.testing.assert_close(gg, rg)


def test_no_autograd_function_without_grad() -> None:
    z = torch.randn(4, dtype=torch.complex64, requires_grad=True)
    with torch.no_grad():
        assert spectral.magnitude(z).grad_fn is None
    assert spectral.magnitude(z).grad_fn is not None


# -- vmap / functorch -----------------------------------------------------------------------


def test_works_under_vmap_and_grad_transforms() -> None:
    g = torch.Generator().manual_seed(6)
    frames = torch.randn(4, 3, 64, generator=g)
    frames[0] = 0.0  # a silent item: zero spectrum everywhere

    def feature(x: torch.Tensor) -> torch.Tensor:
        return spectral.power(torch.fft.rfft(x)).sum()

    def reference(x: torch.Tensor) -> torch.Tensor:
        return (torch.fft.rfft(x).abs() ** 2).sum()

    torch.testing.assert_close(torch.vmap(feature)(frames), torch.vmap(reference)(frames))
    ours = torch.vmap(torch.func.grad(lambda x: spectral.magnitude(torch.fft.rfft(x)).sum()))(
        frames
    )
    ref = torch.vmap(torch.func.grad(lambda x: torch.fft.rfft(x).abs().sum()))(frames)
    torch.testing.assert_close(ours, ref)
    assert not ours.isnan().any()


def test_spectral_functions_are_untouched_by_emulation() -> None:
    """Inside emulate(), complex abs/angle fail like on an affected GPU; the spectral helpers,
    built only from precompiled kernels, keep working (gradients included)."""
    import blackwell_compat as bc

    z = torch.tensor([3 + 4j, -1 + 1j, 0j], dtype=torch.complex64)
    expected = (z.abs(), z.angle(), z.abs() ** 2, _grad(torch.abs, z))
    with bc.emulate("sm_121"):
        with pytest.raises(RuntimeError, match="invalid value for --gpu-architecture"):
            z.abs()
        with pytest.raises(RuntimeError, match="invalid value for --gpu-architecture"):
            z.angle()
        got = (
            spectral.magnitude(z),
            spectral.phase(z),
            spectral.power(z),
            _grad(spectral.magnitude, z),
        )
        rebuilt = spectral.polar(got[0], got[1])
    # Compared outside the block: comparing complex tensors itself uses complex abs.
    for value, ref in zip(got, expected, strict=True):
        torch.testing.assert_close(value, ref)
    torch.testing.assert_close(rebuilt, z)
