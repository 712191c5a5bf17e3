"""The captured original kernels (blackwell_compat.ops.originals): PyTorch's wrapped numbers keep
their promotion when they reach a kernel that only takes tensors."""

from __future__ import annotations

import torch

import blackwell_compat as bc


def test_numbers_in_tensor_slots_keep_wrapped_number_promotion(registration: str) -> None:
    ints = torch.tensor([1, 2, 3], dtype=torch.int16)
    half = torch.tensor([1.0, 2.0], dtype=torch.float16)
    with bc.emulate():
        assert (ints * 0.5).dtype == torch.float32
        assert (ints * 3).dtype == torch.int16
        assert (half * 0.1).dtype == torch.float16
        assert (ints / 2).dtype == torch.float32
        assert torch.equal(half * 0.1, torch.tensor([0.1, 0.2], dtype=torch.float16))
