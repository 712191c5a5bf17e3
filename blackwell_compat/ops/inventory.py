"""Which ATen ops go through PyTorch's Jiterator on CUDA, for which dtypes, per torch release.

The Jiterator compiles a CUDA kernel with NVRTC the first time an op runs on a device.  On a GPU
whose architecture the loaded NVRTC does not know, that compile fails.  This module is the
project's list of those ops: the op guard (:mod:`blackwell_compat.patches.torch_guard`), the CPU
emulation (:mod:`blackwell_compat.emulation`) and the ``audit`` command all read it.

How the table was made (see ``docs/inventory.md`` for the rendered page):

* read from PyTorch's CUDA sources, ``aten/src/ATen/native/cuda/*.cu``: every call of
  ``jitted_gpu_kernel`` / ``opmath_jitted_gpu_kernel_with_scalars`` /
  ``jitted_gpu_reduce_kernel`` under ``#if AT_USE_JITERATOR()``, with the dtype dispatch around it;
* checked against the built libraries: every instantiation of those templates leaves a symbol
  naming the kernel and its scalar type in ``libtorch_cuda.so``.
  ``scripts/jiterator_inventory.py --scan`` lists them for an installed torch; the symbols of
  torch 2.6.0, 2.7.0, 2.8.0, 2.9.0, 2.10.0 and 2.11.0 were compared with this table
  (``tests/test_ops_inventory.py`` repeats the check for the installed torch).

Each entry names the ATen operator packets it covers.  The dispatcher is intercepted for every
overload of those packets (and of the in-place packet ``name_``) that has its own CPU or CUDA
kernel; composite overloads (``torch.absolute``, ``abs_``, ``mul.Scalar``...) reach one of them.

This module is cheap to import: no torch.  The library scan and the documentation page are
maintainer tools outside the runtime package: ``python scripts/jiterator_inventory.py --markdown``
prints ``docs/inventory.md``, ``--json`` the data, ``--scan [LIB]`` lists the Jiterator kernels
of a ``libtorch_cuda.so`` and compares them with the table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..versions import in_range, installed_version

#: The torch releases this inventory describes (release tuple, see :mod:`.versions`).
SUPPORTED_TORCH = ">=2.6"

#: Builds whose ``libtorch_cuda.so`` symbols were compared with this table.
VERIFIED_BUILDS = ("2.6.0+cu124", "2.7.0", "2.8.0", "2.9.0", "2.10.0", "2.11.0+cu130")

SOURCE_ROOT = "aten/src/ATen/native/cuda/"

# dtype names are torch attribute names (``torch.complex64``...), so no torch import is needed.
CHALF = frozenset({"complex32"})
COMPLEX = frozenset({"complex32", "complex64", "complex128"})
COMPLEX_NO_HALF = frozenset({"complex64", "complex128"})
FLOATING = frozenset({"float16", "bfloat16", "float32", "float64"})
FLOAT_DOUBLE = frozenset({"float32", "float64"})
INTEGRAL = frozenset({"uint8", "int8", "int16", "int32", "int64"})
#: ``prod`` is jitted for every dtype its CUDA kernel accepts except ``bool``.
PROD_DTYPES = FLOATING | COMPLEX | INTEGRAL

#: How the dtype that selects the CUDA kernel is worked out from an op's arguments, in words
#: (the functions are :data:`blackwell_compat.ops.rules.DTYPE_RULES`, under the same keys).
DTYPE_RULE_TEXTS: dict[str, str] = {
    "unary": "the dtype of the input",
    "unary_float": "the dtype of the input; integer and bool inputs compute in the default "
    "float dtype",
    "binary": "the promoted dtype of the two operands (tensor or Python number)",
    "binary_float": "the promoted dtype of the two operands; integers compute in the default "
    "float dtype",
    "promote": "the promoted dtype of the tensor operands",
    "div": "the promoted dtype of the operands, true division only (no rounding_mode)",
    "pow": "complex32: every call; complex64/complex128: only a real exponent of 0.5 or -0.5 "
    "given as a number (or a 0-dim CPU tensor), which PyTorch sends to the sqrt/rsqrt kernels",
    "reduce": "the output dtype (the dtype= argument, the out= tensor, or the input dtype with "
    "integers and bool accumulated in int64)",
    "polygamma": "the dtype of the tensor argument, integers computing in the default float "
    "dtype; n=0 uses the digamma kernel and n=1 the trigamma kernel",
    "factory": "the dtype= argument (default dtype otherwise); windows of length 0 and 1 "
    "launch no kernel",
}


@dataclass(frozen=True)
class JitOp:
    """One Jiterator-bound operation family.

    Attributes:
        name: unique entry name (usually the ATen name).
        aten: ATen operator packets intercepted for this entry (``"abs"`` also covers
            ``"abs_"``); only overloads with their own CPU/CUDA kernel are registered.
        dtypes: dtype names for which the CUDA kernel is jitted (see ``rule``).
        kernels: the ``<name>_name`` constants of the Jiterator kernels in the source.
        source: the CUDA source file they were read from (under ``aten/src/ATen/native/cuda/``).
        rule: key of :data:`DTYPE_RULE_TEXTS`.
        torch: ``packaging`` specifier of the torch releases where the entry holds.
        forms: user-facing spellings that end up in these kernels (documentation only).
        note: anything worth knowing.
        extra_kernels: kernels of the same op present only in some releases (not required
            by the library scan).
        composite: overloads (``aten::name.overload``) intercepted although PyTorch registers
            them as composite, because their implementation calls the CUDA kernel directly
            instead of re-dispatching to an overload that is intercepted anyway.
    """

    name: str
    aten: tuple[str, ...]
    dtypes: frozenset[str]
    kernels: tuple[str, ...]
    source: str
    rule: str
    torch: str = SUPPORTED_TORCH
    forms: tuple[str, ...] = ()
    note: str = ""
    group: str = field(default="", compare=False)
    extra_kernels: tuple[str, ...] = ()
    composite: tuple[str, ...] = ()

    def applies_to(self, torch_version: str | None) -> bool:
        """Whether the entry holds for *torch_version* (``None``: every supported release)."""
        if torch_version is None:
            return True
        return in_range(torch_version, self.torch)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["dtypes"] = sorted(self.dtypes)
        data["aten"] = list(self.aten)
        data["kernels"] = list(self.kernels)
        data["extra_kernels"] = list(self.extra_kernels)
        data["forms"] = list(self.forms)
        return data


def _unary_complex(
    name: str,
    source: str,
    *,
    dtypes: frozenset[str] = COMPLEX,
    kernel: str | None = None,
    rule: str = "unary_float",
    forms: Sequence[str] = (),
    torch: str = SUPPORTED_TORCH,
    note: str = "",
    composite: tuple[str, ...] = (),
) -> JitOp:
    return JitOp(
        name=name,
        aten=(name,),
        dtypes=dtypes,
        kernels=(kernel or f"{name}_name",),
        source=source,
        rule=rule,
        torch=torch,
        forms=tuple(forms) or (f"torch.{name}", f"Tensor.{name}", f"Tensor.{name}_", "out="),
        note=note,
        group="complex",
        composite=composite,
    )


def _special(
    name: str,
    source: str,
    kernel: str,
    *,
    dtypes: frozenset[str] = FLOAT_DOUBLE,
    rule: str = "unary_float",
    forms: Sequence[str] = (),
    note: str = "",
) -> JitOp:
    public = name.replace("special_", "torch.special.", 1) if name.startswith("special_") else ""
    return JitOp(
        name=name,
        aten=(name,),
        dtypes=dtypes,
        kernels=(kernel,),
        source=source,
        rule=rule,
        forms=tuple(forms) or ((public,) if public else (f"torch.{name}",)),
        note=note,
        group="real",
    )


_TAN_NOTE = (
    "PyTorch 2.10 disabled the jitted complex kernel ('accuracy issues'); from then on a "
    "precompiled kernel runs"
)

ENTRIES: tuple[JitOp, ...] = (
    # -- complex unary ops ---------------------------------------------------------------------
    _unary_complex(
        "abs",
        "AbsKernel.cu",
        rule="unary",
        forms=("torch.abs", "Tensor.abs", "abs(z)", "Tensor.abs_", "torch.absolute", "out="),
        note="complex abs is also reached by torch.isclose/allclose on complex tensors",
    ),
    _unary_complex(
        "angle", "UnaryComplexKernels.cu", forms=("torch.angle", "Tensor.angle", "out=")
    ),
    _unary_complex(
        "sgn",
        "UnarySignKernels.cu",
        rule="unary",
        forms=("torch.sgn", "Tensor.sgn", "Tensor.sgn_", "out=", "backward of complex abs"),
    ),
    _unary_complex(
        "neg",
        "UnarySignKernels.cu",
        rule="unary",
        forms=("torch.neg", "-z", "Tensor.neg_", "torch.negative", "out=", "resolving neg views"),
    ),
    _unary_complex(
        "conj_physical",
        "UnaryComplexKernels.cu",
        dtypes=CHALF,
        kernel="conj_name",
        rule="unary",
        forms=("torch.conj_physical", "Tensor.conj_physical_", "out="),
        note="complex64/complex128 use a precompiled kernel. Not intercepted: a complex32 "
        "conj view materialised by copy_ (resolve_conj, clone), which runs the same kernel "
        "inside copy_",
        composite=("aten::conj_physical_",),
    ),
    _unary_complex("exp", "UnaryOpsKernel.cu"),
    _unary_complex("sqrt", "UnaryOpsKernel.cu", note="also pow(z, 0.5)"),
    _unary_complex("rsqrt", "UnaryOpsKernel.cu", note="also pow(z, -0.5)"),
    _unary_complex("log", "UnaryLogKernels.cu"),
    _unary_complex("log10", "UnaryLogKernels.cu", dtypes=COMPLEX_NO_HALF),
    _unary_complex("log2", "UnaryLogKernels.cu", dtypes=COMPLEX_NO_HALF),
    _unary_complex("sin", "UnaryGeometricSinKernel.cu"),
    _unary_complex("cos", "UnaryGeometricCosKernel.cu"),
    _unary_complex("sinh", "UnaryGeometricSinhKernel.cu"),
    _unary_complex("cosh", "UnaryGeometricCoshKernel.cu"),
    _unary_complex("tan", "UnaryGeometricTanKernel.cu", torch=">=2.6,<2.10", note=_TAN_NOTE),
    _unary_complex("tanh", "UnaryGeometricTanhKernel.cu", torch=">=2.6,<2.10", note=_TAN_NOTE),
    _unary_complex("atan", "UnaryGeometricAtanKernel.cu"),
    _unary_complex("atanh", "UnaryGeometricAtanhKernel.cu"),
    _unary_complex(
        "sigmoid",
        "UnarySpecialOpsKernel.cu",
        forms=("torch.sigmoid", "Tensor.sigmoid_", "torch.special.expit", "out="),
    ),
    # -- complex binary / ternary ops -------------------------------------------------------
    JitOp(
        name="pow",
        aten=("pow",),
        dtypes=COMPLEX,
        kernels=("pow_name", "pow_scalar_base_name"),
        source="PowKernel.cu",
        rule="pow",
        forms=("torch.pow", "z ** w", "Tensor.pow_", "out="),
        note="complex64/complex128 z ** 0.5 and z ** -0.5 run the jitted sqrt/rsqrt kernels "
        "(torch.float_power does not: it passes the exponent as a complex number)",
        group="complex",
    ),
    JitOp(
        name="mul",
        aten=("mul",),
        dtypes=CHALF,
        kernels=("mul_name",),
        source="BinaryMulKernel.cu",
        rule="binary",
        forms=("torch.mul", "a * b", "Tensor.mul_", "out=", "FFT normalisation of half spectra"),
        group="complex",
    ),
    JitOp(
        name="div",
        aten=("div",),
        dtypes=CHALF,
        kernels=("div_name",),
        source="BinaryDivTrueKernel.cu",
        rule="div",
        forms=("torch.div", "a / b", "Tensor.div_", "torch.true_divide", "out="),
        group="complex",
    ),
    *(
        JitOp(
            name=name,
            aten=(name,),
            dtypes=COMPLEX_NO_HALF,
            kernels=(f"{name}_name",),
            source="BinaryLogicalOpsKernels.cu",
            rule="binary",
            forms=(f"torch.{name}", f"Tensor.{name}_", "out="),
            group="complex",
        )
        for name in ("logical_and", "logical_or", "logical_xor")
    ),
    JitOp(
        name="lerp",
        aten=("lerp",),
        dtypes=COMPLEX,
        kernels=("lerp_tensor_name", "lerp_scalar_name"),
        source="Lerp.cu",
        rule="promote",
        forms=("torch.lerp", "Tensor.lerp_", "out="),
        group="complex",
    ),
    JitOp(
        name="addcmul",
        aten=("addcmul",),
        dtypes=COMPLEX_NO_HALF,
        kernels=("addcmul_name",),
        extra_kernels=("addcmul_scalar_tensor2_name",),
        source="PointwiseOpsKernel.cu",
        rule="promote",
        forms=("torch.addcmul", "Tensor.addcmul_", "out=", "optimizers on complex parameters"),
        note="addcmul_scalar_tensor2 (a CPU scalar tensor2) since torch 2.7",
        group="complex",
    ),
    JitOp(
        name="addcdiv",
        aten=("addcdiv",),
        dtypes=COMPLEX_NO_HALF,
        kernels=("addcdiv_name",),
        source="PointwiseOpsKernel.cu",
        rule="promote",
        forms=("torch.addcdiv", "Tensor.addcdiv_", "out=", "Adam on complex parameters"),
        group="complex",
    ),
    JitOp(
        name="sigmoid_backward",
        aten=("sigmoid_backward",),
        dtypes=COMPLEX,
        kernels=("sigmoid_backward_name",),
        source="BinaryMiscBackwardOpsKernels.cu",
        rule="promote",
        forms=("backward of complex sigmoid",),
        group="complex",
    ),
    JitOp(
        name="tanh_backward",
        aten=("tanh_backward",),
        dtypes=COMPLEX,
        kernels=("tanh_backward_name",),
        source="BinaryMiscBackwardOpsKernels.cu",
        rule="promote",
        forms=("backward of complex tanh",),
        group="complex",
    ),
    JitOp(
        name="logaddexp",
        aten=("logaddexp",),
        dtypes=COMPLEX,
        kernels=("logaddexp_complex_name",),
        source="LogAddExpKernel.cu",
        rule="binary",
        torch=">=2.10",
        forms=("torch.logaddexp", "out="),
        note="complex logaddexp on CUDA appeared in torch 2.10; real dtypes are precompiled",
        group="complex",
    ),
    # -- reductions ------------------------------------------------------------------------
    JitOp(
        name="sum",
        aten=("sum",),
        dtypes=CHALF,
        kernels=("sum_name",),
        source="ReduceSumProdKernel.cu",
        rule="reduce",
        forms=("torch.sum", "Tensor.sum", "out=", "mean of complex32 (sum, then div)"),
        group="reduction",
    ),
    JitOp(
        name="nansum",
        aten=("nansum",),
        dtypes=COMPLEX,
        kernels=("nansum_name",),
        source="ReduceSumProdKernel.cu",
        rule="reduce",
        forms=("torch.nansum", "out="),
        group="reduction",
    ),
    JitOp(
        name="prod",
        aten=("prod",),
        dtypes=PROD_DTYPES,
        kernels=("prod_name",),
        source="ReduceSumProdKernel.cu",
        rule="reduce",
        forms=("torch.prod", "Tensor.prod", "out="),
        note="every output dtype but bool, integers included (Linux builds; Windows builds "
        "compile the reduction ahead of time)",
        group="reduction",
    ),
    # -- real special functions -----------------------------------------------------------------
    _special(
        "lgamma",
        "UnaryGammaKernels.cu",
        "lgamma_name",
        dtypes=FLOATING,
        forms=(
            "torch.lgamma",
            "Tensor.lgamma_",
            "torch.special.gammaln",
            "torch.mvlgamma",
            "torch.distributions log_prob (Gamma, Beta, Dirichlet, Poisson...)",
        ),
    ),
    _special(
        "digamma",
        "UnaryGammaKernels.cu",
        "digamma_name",
        dtypes=FLOATING,
        forms=("torch.digamma", "torch.special.psi", "torch.special.digamma", "Tensor.digamma_"),
    ),
    JitOp(
        name="polygamma",
        aten=("polygamma",),
        dtypes=FLOATING,
        kernels=("polygamma_name", "trigamma_name", "digamma_name"),
        source="UnaryGammaKernels.cu",
        rule="polygamma",
        forms=("torch.polygamma", "torch.special.polygamma", "Tensor.polygamma_"),
        group="real",
    ),
    _special(
        "erfc",
        "UnarySpecialOpsKernel.cu",
        "erfc_name",
        dtypes=FLOATING,
        forms=("torch.erfc", "torch.special.erfc", "Tensor.erfc_"),
    ),
    _special(
        "erfinv",
        "UnarySpecialOpsKernel.cu",
        "erfinv_name",
        dtypes=FLOATING,
        forms=("torch.erfinv", "torch.special.erfinv", "Tensor.erfinv_", "nn.init.trunc_normal_"),
    ),
    _special(
        "exp2",
        "UnarySpecialOpsKernel.cu",
        "exp2_name",
        dtypes=FLOATING | COMPLEX_NO_HALF,
        forms=("torch.exp2", "torch.special.exp2", "Tensor.exp2_"),
    ),
    _special(
        "sinc",
        "UnarySpecialOpsKernel.cu",
        "sinc_name",
        dtypes=FLOATING | COMPLEX_NO_HALF,
        forms=("torch.sinc", "torch.special.sinc", "Tensor.sinc_"),
    ),
    _special(
        "i0",
        "UnarySpecialOpsKernel.cu",
        "i0_name",
        dtypes=FLOATING,
        forms=("torch.i0", "torch.special.i0", "Tensor.i0_"),
    ),
    _special("special_i0e", "UnarySpecialOpsKernel.cu", "i0e_name", dtypes=FLOATING),
    _special("special_i1", "UnarySpecialOpsKernel.cu", "i1_name", dtypes=FLOATING),
    _special("special_i1e", "UnarySpecialOpsKernel.cu", "i1e_name", dtypes=FLOATING),
    _special("special_erfcx", "UnarySpecialOpsKernel.cu", "erfcx_name"),
    _special("special_ndtri", "UnarySpecialOpsKernel.cu", "ndtri_name"),
    _special("special_log_ndtr", "UnarySpecialOpsKernel.cu", "log_ndtr_name"),
    _special("special_entr", "UnarySpecialOpsKernel.cu", "entr_name", dtypes=FLOATING),
    JitOp(
        name="kaiser_window",
        aten=("kaiser_window",),
        dtypes=FLOATING,
        kernels=("kaiser_window_name",),
        source="UnarySpecialOpsKernel.cu",
        rule="factory",
        forms=("torch.kaiser_window", "torch.signal.windows.kaiser (via i0)"),
        group="real",
    ),
    _special(
        "special_zeta",
        "ZetaKernel.cu",
        "zeta_name",
        rule="binary_float",
        forms=("torch.special.zeta",),
    ),
    *(
        _special(f"special_{fn}", f"{fn}.cu", f"{fn}_name")
        for fn in (
            "airy_ai",
            "bessel_j0",
            "bessel_j1",
            "bessel_y0",
            "bessel_y1",
            "modified_bessel_i0",
            "modified_bessel_i1",
            "modified_bessel_k0",
            "modified_bessel_k1",
            "scaled_modified_bessel_k0",
            "scaled_modified_bessel_k1",
            "spherical_bessel_j0",
        )
    ),
    *(
        _special(f"special_{fn}", f"{fn}.cu", f"{fn}_name", rule="binary_float")
        for fn in (
            "chebyshev_polynomial_t",
            "chebyshev_polynomial_u",
            "chebyshev_polynomial_v",
            "chebyshev_polynomial_w",
            "shifted_chebyshev_polynomial_t",
            "shifted_chebyshev_polynomial_u",
            "shifted_chebyshev_polynomial_v",
            "shifted_chebyshev_polynomial_w",
            "hermite_polynomial_h",
            "hermite_polynomial_he",
            "laguerre_polynomial_l",
            "legendre_polynomial_p",
        )
    ),
    *(
        JitOp(
            name=name,
            aten=(name,),
            dtypes=INTEGRAL,
            kernels=(f"{name}_name",),
            source="GcdLcmKernel.cu",
            rule="binary",
            forms=(f"torch.{name}", f"Tensor.{name}_", "out="),
            group="integer",
        )
        for name in ("gcd", "lcm")
    ),
)

#: Ops that are NOT jitted although one might expect it; checked by the tests (no false alarms).
NOT_JITTED: dict[str, str] = {
    "tan, tanh (complex, torch >= 2.10)": "precompiled since the Jiterator path was disabled",
    "acos, asin, acosh, asinh (complex)": "the Jiterator path is disabled (#if 0) upstream",
    "mul, div, add, sub, sum (complex64/complex128)": "precompiled",
    "pow (complex64/complex128, exponent other than +-0.5)": "precompiled",
    "reciprocal, expm1, log1p, conj_physical (complex64/complex128)": "precompiled",
    "abs, sqrt, exp, log, sin, cos, tanh, atan2, hypot, erf (real dtypes)": "precompiled",
    "cumprod, cumsum": "scan kernels, precompiled",
    "stft, istft, torch.fft.* (float32/float64)": "cuFFT",
    "view_as_real, view_as_complex, .real, .imag, torch.complex, torch.polar": "views or "
    "precompiled kernels",
    "xlogy, xlog1py, igamma, igammac, logit, nan_to_num": "precompiled",
}


def entries(torch_version: str | None = None) -> tuple[JitOp, ...]:
    """The entries that hold for *torch_version*; ``None`` gives every entry."""
    return tuple(e for e in ENTRIES if e.applies_to(torch_version))


def installed_torch_version() -> str | None:
    """The installed torch version from package metadata (torch is not imported)."""
    return installed_version("torch")


def by_name(torch_version: str | None = None) -> dict[str, JitOp]:
    return {e.name: e for e in entries(torch_version)}


def packets(entry: JitOp) -> tuple[str, ...]:
    """The ATen packets intercepted for *entry*: each name and its in-place twin."""
    result: list[str] = []
    for name in entry.aten:
        result.extend((name, f"{name}_"))
    return tuple(result)


def kernel_names(torch_version: str | None = None) -> dict[str, str]:
    """``{"abs_name": "abs", ...}``: Jiterator kernel constant -> entry name."""
    result: dict[str, str] = {}
    for entry in entries(torch_version):
        for kernel in (*entry.kernels, *entry.extra_kernels):
            result.setdefault(kernel, entry.name)
    return result
