"""Tensors of the emulated CUDA device: how they are made, moved, viewed, differentiated, and
refused where CUDA refuses."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
import torch

import blackwell_compat as bc
from blackwell_compat.emulated_device.tensor import EmulatedDeviceError, EmulatedTensor


@pytest.fixture
def cuda() -> Iterator[None]:
    with bc.emulate("sm_121", device="cuda"):
        yield


def _on_device(t: torch.Tensor) -> bool:
    return isinstance(t, EmulatedTensor) and t.device == torch.device("cuda", 0) and t.is_cuda


@pytest.mark.parametrize(
    "device", ["cuda", "cuda:0", 0, torch.device("cuda"), torch.device("cuda", 0)]
)
def test_factories_with_every_device_form(cuda: None, device: object) -> None:
    for make in (
        lambda: torch.zeros(2, 3, device=device),
        lambda: torch.randn(4, device=device, dtype=torch.float64),
        lambda: torch.arange(5, device=device),
        lambda: torch.tensor([1, 2], device=device),
        lambda: torch.full((2,), 7.0, device=device),
        lambda: torch.empty(0, device=device),
        lambda: torch.zeros_like(torch.ones(3), device=device),
    ):
        t = make()
        assert _on_device(t), make
        assert not t.is_cpu and t.get_device() == 0


def test_factory_values_shapes_and_dtypes_match_cpu(cuda: None) -> None:
    t = torch.arange(6, device="cuda", dtype=torch.int16).reshape(2, 3)
    host = t.cpu()
    assert type(host) is torch.Tensor and host.device.type == "cpu"
    assert host.dtype == torch.int16 and host.shape == (2, 3) and host.stride() == (3, 1)
    assert host.tolist() == [[0, 1, 2], [3, 4, 5]]
    assert t.sum().item() == 15


def test_a_device_index_the_emulation_lacks_is_refused_as_cuda_does(cuda: None) -> None:
    with pytest.raises(RuntimeError, match="invalid device ordinal"):
        torch.zeros(1, device="cuda:1")
    with pytest.raises(RuntimeError, match="invalid device ordinal"):
        torch.ones(1).to(2)
    with pytest.raises(RuntimeError, match="invalid device ordinal"):
        torch.cuda.set_device(1)


def test_to_cuda_cpu_copies_and_dtype(cuda: None) -> None:
    cpu = torch.tensor([1.5, -0.0, 3.0])
    dev = cpu.to("cuda")
    assert _on_device(dev)
    cpu[0] = 100.0  # a copy, not a view of the CPU tensor
    assert dev.cpu()[0].item() == 1.5
    assert torch.equal(torch.signbit(dev.cpu()), torch.tensor([False, True, False]))
    assert dev.to("cuda") is dev and dev.cuda() is dev
    half = dev.to(torch.float16)
    assert _on_device(half) and half.dtype == torch.float16
    both = cpu.to("cuda", torch.float64, non_blocking=True)
    assert _on_device(both) and both.dtype == torch.float64
    other = torch.zeros(1, device="cuda", dtype=torch.int32)
    assert cpu.to(other).dtype == torch.int32 and _on_device(cpu.to(other))
    back = dev.to("cpu", torch.float64)
    assert type(back) is torch.Tensor and back.dtype == torch.float64
    assert _on_device(torch.ones(2).cuda(non_blocking=True))
    assert torch.ones(2).to("cpu").device.type == "cpu"


def test_numpy_and_cpu_only_uses_are_refused_as_on_cuda(cuda: None) -> None:
    dev = torch.ones(2, device="cuda")
    with pytest.raises(TypeError, match="can't convert cuda:0 device type tensor to numpy"):
        dev.numpy()
    with pytest.raises(RuntimeError, match="only dense CPU tensors can be pinned"):
        dev.pin_memory()
    assert dev.data_ptr() == dev[1:].data_ptr() - 4 != 0  # aliasing checks compare these
    for api, call in (
        ("untyped_storage", dev.untyped_storage),
        ("__dlpack__", dev.__dlpack__),
        ("share_memory_", dev.share_memory_),
    ):
        with pytest.raises(EmulatedDeviceError, match="emulated CUDA device") as info:
            call()
        assert api in str(info.value)


def test_mixing_with_a_cpu_tensor_is_refused_but_cpu_scalars_and_copies_work(cuda: None) -> None:
    dev = torch.ones(3, device="cuda")
    with pytest.raises(RuntimeError, match="Expected all tensors to be on the same device"):
        dev + torch.ones(3)
    with pytest.raises(RuntimeError, match="same device"):
        torch.cat([dev, torch.ones(3)])
    assert (dev * torch.tensor(2.0)).cpu().tolist() == [2.0, 2.0, 2.0]  # 0-dim CPU scalar
    host = torch.zeros(3)
    host.copy_(dev)
    assert host.tolist() == [1.0, 1.0, 1.0] and type(host) is torch.Tensor
    dev.copy_(torch.arange(3.0))
    assert dev.cpu().tolist() == [0.0, 1.0, 2.0]
    assert dev[torch.tensor([2, 0])].cpu().tolist() == [2.0, 0.0]  # CPU index tensor


def test_views_and_in_place_ops_share_memory(cuda: None) -> None:
    base = torch.zeros(4, 3, device="cuda")
    view = base[1:3].t()
    assert _on_device(view) and view.shape == (3, 2) and view.stride() == (1, 3)
    view.add_(5.0)
    assert base.cpu()[1:3].tolist() == [[5.0] * 3] * 2
    returned = base.mul_(2)
    assert returned is base
    out = torch.empty(4, 3, device="cuda")
    result = torch.add(base, 1, out=out)
    assert result is out and out.cpu()[1, 0].item() == 11.0
    assert base.view(-1).cpu()[3].item() == 10.0
    assert base.unbind(0)[1].cpu().tolist() == [10.0] * 3


def test_autograd_through_device_and_transfers(cuda: None) -> None:
    leaf = torch.tensor([1.0, 2.0], device="cuda", requires_grad=True)
    assert leaf.is_leaf and _on_device(leaf)
    host = torch.tensor([3.0, 4.0], requires_grad=True)
    loss = (leaf * host.to("cuda")).sum() + (leaf.cpu() ** 2).sum()
    loss.backward()
    assert _on_device(leaf.grad)
    assert leaf.grad.cpu().tolist() == [5.0, 8.0]
    assert type(host.grad) is torch.Tensor and host.grad.tolist() == [1.0, 2.0]


def test_module_to_cuda_and_back_keeps_parameters_and_trains(cuda: None) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    reference = [p.detach().clone() for p in model.parameters()]
    weight = model[0].weight
    model.to("cuda")
    assert model[0].weight is weight  # swapped in place: optimisers keep their references
    assert all(_on_device(p) and isinstance(p, torch.nn.Parameter) for p in model.parameters())
    assert all(_on_device(b) for b in model.buffers())
    for p, r in zip(model.parameters(), reference, strict=True):
        assert torch.equal(p.detach().cpu(), r)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.randn(5, 4, device="cuda")).pow(2).sum().backward()
    opt.step()
    assert all(_on_device(p.grad) for p in model.parameters())
    model.half()
    assert model[0].weight.dtype == torch.float16
    assert model[0].weight.cpu().dtype == torch.float16
    model.float().cpu()
    assert all(type(p) is torch.nn.Parameter and p.device.type == "cpu" for p in model.parameters())


def test_state_dict_save_and_load_with_map_location(cuda: None) -> None:
    model = torch.nn.Linear(3, 2).cuda()
    state = model.state_dict()
    assert all(_on_device(t) for t in state.values())
    buffer = io.BytesIO()
    torch.save(state, buffer)
    for location in ("cuda", "cuda:0", torch.device("cuda"), {"cpu": "cuda:0"}):
        buffer.seek(0)
        loaded = torch.load(buffer, map_location=location, weights_only=True)
        assert all(_on_device(t) for t in loaded.values()), location
        assert torch.equal(loaded["weight"].cpu(), model.weight.detach().cpu())
    buffer.seek(0)
    on_cpu = torch.load(buffer, map_location="cpu", weights_only=True)
    assert all(type(t) is torch.Tensor for t in on_cpu.values())
    fresh = torch.nn.Linear(3, 2).to("cuda")
    fresh.load_state_dict(on_cpu)
    assert torch.equal(fresh.weight.detach().cpu(), model.weight.detach().cpu())
    assert _on_device(fresh.weight)


def test_pin_memory_and_non_blocking_copies(cuda: None) -> None:
    host = torch.arange(4.0)
    assert not host.is_pinned()
    pinned = host.pin_memory()
    assert pinned.is_pinned() and pinned is not host and torch.equal(pinned, host)
    dev = pinned.to("cuda", non_blocking=True)
    assert _on_device(dev) and not dev.is_pinned()


def test_dataloader_pin_memory(cuda: None) -> None:
    data = torch.utils.data.TensorDataset(torch.arange(8.0).reshape(4, 2))
    loader = torch.utils.data.DataLoader(data, batch_size=2, pin_memory=True)
    batches = [b[0].to("cuda", non_blocking=True) for b in loader]
    assert all(_on_device(b) for b in batches)
    assert torch.cat([b.cpu() for b in batches]).tolist() == data.tensors[0].tolist()


def test_generator_and_seeds(cuda: None) -> None:
    gen = torch.Generator("cuda")
    assert gen.device == torch.device("cuda", 0) and isinstance(gen, torch.Generator)
    gen.manual_seed(3)
    a = torch.randn(4, device="cuda", generator=gen)
    gen.manual_seed(3)
    assert torch.equal(a.cpu(), torch.randn(4, device="cuda", generator=gen).cpu())
    assert isinstance(torch.Generator(), torch.Generator)
    # One stream for the CPU and the device: the same seed draws the same numbers on both, so
    # a run on the device can be compared with a CPU run of the same program.
    torch.cuda.manual_seed(7)
    on_device = torch.rand(3, device="cuda")
    noise = torch.randn_like(on_device)
    dropped = torch.nn.functional.dropout(torch.ones(100, device="cuda"), 0.5)
    torch.manual_seed(7)
    assert torch.equal(on_device.cpu(), torch.rand(3))
    assert torch.equal(noise.cpu(), torch.randn(3))
    assert torch.equal(dropped.cpu(), torch.nn.functional.dropout(torch.ones(100), 0.5))


def test_memory_counts_live_device_tensors(cuda: None) -> None:
    torch.cuda.reset_peak_memory_stats()
    start = torch.cuda.memory_allocated()
    x = torch.empty(1024, device="cuda", dtype=torch.float32)
    assert torch.cuda.memory_allocated() == start + 4096
    view = x[10:20]
    assert torch.cuda.memory_allocated() == start + 4096  # a view holds no new memory
    y = torch.empty(256, device="cuda", dtype=torch.float64)
    assert torch.cuda.memory_allocated() == start + 4096 + 2048
    del x, view, y
    assert torch.cuda.memory_allocated() == start
    assert torch.cuda.max_memory_allocated() == start + 6144
    torch.cuda.reset_peak_memory_stats()
    assert torch.cuda.max_memory_allocated() == start
    free, total = torch.cuda.mem_get_info()
    assert total == torch.cuda.get_device_properties(0).total_memory and free == total - start
    torch.ones(100)  # CPU tensors are not device memory
    assert torch.cuda.memory_allocated() == start


def test_repr_says_cuda(cuda: None) -> None:
    t = torch.tensor([1.0, 2.0], device="cuda", requires_grad=True)
    assert repr(t) == "tensor([1., 2.], device='cuda:0', requires_grad=True)"
    assert "device='cuda:0'" in repr(t * 2) and "grad_fn" in repr(t * 2)


def test_composite_ops_that_reshape_in_place_give_true_shapes(cuda: None) -> None:
    # torch.stft ends with in-place squeeze/transpose inside C++ (on the CPU tensor).
    signal = torch.randn(1000)
    window = torch.hann_window(400)
    expected = torch.stft(signal, 400, 160, window=window, return_complex=True)
    got = torch.stft(signal.cuda(), 400, 160, window=window.cuda(), return_complex=True)
    assert got.shape == expected.shape and got.stride() == expected.stride()
    assert torch.equal(got.cpu(), expected)
    assert got.tolist() == expected.tolist()


def test_differentiating_through_an_in_place_reshaping_composite_is_refused(cuda: None) -> None:
    signal = torch.randn(1000, device="cuda", requires_grad=True)
    window = torch.hann_window(400, device="cuda")
    with pytest.raises(EmulatedDeviceError, match=r"torch\.no_grad"):
        torch.stft(signal, 400, 160, window=window, return_complex=True)
    with torch.no_grad():
        assert torch.stft(signal, 400, 160, window=window, return_complex=True).shape == (201, 7)


def test_conjugate_and_negative_views_compute_their_values() -> None:
    """Found by torchaudio's own CUDA tests: a lazily conjugated device tensor went into
    binary ops unconjugated (silently wrong, with and without the patches)."""
    x = torch.randn(5, dtype=torch.cfloat)
    y = torch.randn(5, dtype=torch.cfloat)
    cases = {
        "add": lambda a, b: a + b.conj(),
        "mul": lambda a, b: a * b.conj(),
        "exp": lambda a, b: torch.exp(b.conj()),
        "einsum": lambda a, b: torch.einsum("i,i->", a, b.conj()),
        "neg view": lambda a, b: a.conj().imag * 2 + b.real,
        "resolved": lambda a, b: a.conj().resolve_conj() - b,
    }
    want = {name: fn(x, y) for name, fn in cases.items()}
    with bc.emulate("sm_121", device="cuda"):
        bc.apply()
        try:
            xd, yd = x.to("cuda"), y.to("cuda")
            got = {name: fn(xd, yd).cpu() for name, fn in cases.items()}
        finally:
            bc.revert()
    for name in cases:
        assert got[name].dtype == want[name].dtype, name
        torch.testing.assert_close(got[name], want[name], rtol=1.3e-6, atol=1e-5, msg=name)


def test_writing_into_a_conjugate_view_is_refused() -> None:
    x = torch.randn(4, dtype=torch.cfloat)
    with bc.emulate("sm_121", device="cuda"):
        view = x.to("cuda").conj()
        with pytest.raises(RuntimeError, match="conjugate or negative view"):
            view.add_(1)
