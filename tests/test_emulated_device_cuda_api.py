"""``torch.cuda`` on the emulated device: what it answers, streams and events, autocast, and
the APIs it refuses with the form that works."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import torch

import blackwell_compat as bc
from blackwell_compat.emulated_device.cuda_api import REFUSED, device_properties
from blackwell_compat.emulated_device.tensor import EmulatedDeviceError


@pytest.fixture
def cuda() -> Iterator[None]:
    with bc.emulate("sm_121", device="cuda"):
        yield


def test_device_queries_answer_for_the_emulated_arch(cuda: None) -> None:
    assert torch.cuda.is_available() and torch.cuda.device_count() == 1
    assert torch.cuda.is_initialized()
    assert torch.cuda.current_device() == 0
    torch.cuda.set_device(0)
    torch.cuda.set_device(torch.device("cuda:0"))
    assert torch.cuda.get_device_capability() == (12, 1)
    assert torch.cuda.get_device_capability(0) == (12, 1)
    assert torch.cuda.get_device_name() == "NVIDIA GB10 (emulated)"
    props = torch.cuda.get_device_properties(0)
    assert (props.name, props.major, props.minor) == ("NVIDIA GB10 (emulated)", 12, 1)
    assert props.total_memory > 100 * 1024**3 and props.multi_processor_count == 48
    assert torch.cuda.is_bf16_supported()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    with torch.cuda.device(0):
        assert torch.cuda.current_device() == 0


@pytest.mark.parametrize(
    ("arch", "capability", "name"),
    [
        ("sm_120", (12, 0), "NVIDIA GeForce RTX 5090 (emulated)"),
        ("sm_100", (10, 0), "NVIDIA B200 (emulated)"),
        ("sm_130", (13, 0), "NVIDIA GPU sm_130 (emulated)"),
    ],
)
def test_each_arch_has_its_own_capability_and_name(arch, capability, name) -> None:
    with bc.emulate(arch, device="cuda"):
        assert torch.cuda.get_device_capability() == capability
        assert torch.cuda.get_device_name(0) == name
    assert device_properties(arch).name == name


def test_streams_and_events(cuda: None) -> None:
    stream = torch.cuda.Stream()
    assert stream.device == torch.device("cuda", 0) and stream.query()
    default = torch.cuda.current_stream()
    assert default == torch.cuda.default_stream() and stream != default
    with torch.cuda.stream(stream):
        assert torch.cuda.current_stream() == stream
        x = torch.ones(3, device="cuda") * 2
    assert torch.cuda.current_stream() == default
    with stream:
        assert torch.cuda.current_stream() == stream
    default.wait_stream(stream)
    x.record_stream(stream)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    time.sleep(0.01)
    end.record(stream)
    end.synchronize()
    elapsed = start.elapsed_time(end)
    assert 5.0 <= elapsed < 5000.0
    assert stream.record_event().query()
    untimed = torch.cuda.Event()
    untimed.record()
    with pytest.raises(ValueError, match="enable_timing=True"):
        untimed.elapsed_time(end)
    with pytest.raises(RuntimeError, match="recorded"):
        torch.cuda.Event(enable_timing=True).elapsed_time(end)


@pytest.mark.filterwarnings("ignore:.*torch.cuda.amp.autocast:FutureWarning")
def test_autocast_cuda_and_amp(cuda: None) -> None:
    layer = torch.nn.Linear(4, 3).cuda()
    x = torch.randn(2, 4, device="cuda")
    with torch.autocast("cuda"):
        out = layer(x)
        assert out.dtype == torch.float16 and out.device.type == "cuda"
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.float32  # CPU: no
    with torch.autocast("cuda", dtype=torch.bfloat16):
        assert layer(x).dtype == torch.bfloat16
    with torch.cuda.amp.autocast():
        out = layer(x)
        assert out.dtype == torch.float16
    out.float().sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.dtype == torch.float32
    assert layer(x).dtype == torch.float32


def test_cudnn_flags_are_plain_settings(cuda: None) -> None:
    before = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    try:
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.deterministic = True
        assert torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
        conv = torch.nn.Conv1d(2, 3, 3).cuda()
        assert conv(torch.randn(1, 2, 8, device="cuda")).shape == (1, 3, 6)
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before


def test_rng_state_round_trip(cuda: None) -> None:
    torch.cuda.manual_seed(5)
    assert torch.cuda.initial_seed() == 5
    saved = torch.cuda.get_rng_state()
    a = torch.randn(3, device="cuda")
    torch.cuda.set_rng_state(saved)
    assert torch.equal(a.cpu(), torch.randn(3, device="cuda").cpu())
    torch.cuda.set_rng_state_all(torch.cuda.get_rng_state_all())


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_apis_name_themselves_and_the_form_that_works(cuda: None, name: str) -> None:
    with pytest.raises(EmulatedDeviceError) as info:
        getattr(torch.cuda, name)()
    text = str(info.value)
    assert f"torch.cuda.{name}" in text and "emulated CUDA device" in text
    assert REFUSED[name] in text


def test_user_jiterator_kernels_fail_as_on_the_affected_gpu(cuda: None) -> None:
    code = "template <typename T> T my_kernel(T x) { return x * 2; }"
    fn = torch.cuda.jiterator._create_jit_fn(code)
    with pytest.raises(RuntimeError) as info:
        fn(torch.ones(2, device="cuda"))
    assert "gpu-architecture" in str(info.value) and "my_kernel" in str(info.value)


def test_interprocess_events_are_refused(cuda: None) -> None:
    with pytest.raises(EmulatedDeviceError, match="interprocess"):
        torch.cuda.Event(interprocess=True)


def test_device_index_out_of_range_in_queries(cuda: None) -> None:
    for call in (
        lambda: torch.cuda.get_device_name(1),
        lambda: torch.cuda.get_device_properties(2),
        lambda: torch.cuda.memory_allocated(1),
    ):
        with pytest.raises(RuntimeError, match="invalid device ordinal"):
            call()
