"""``torch.cuda`` as the emulated device answers it: one GPU of the emulated architecture.

Each function here replaces the ``torch.cuda`` function of the same name while the emulated
device is installed (:class:`~blackwell_compat.emulated_device.EmulatedCuda` does the
replacing and restores the originals).  Streams and events order nothing (the CPU runs every op
when it is called); events time with the host clock.  APIs that cannot be emulated raise
:class:`~.tensor.EmulatedDeviceError` naming the form that works.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from .. import state
from ..config import arch_to_capability
from .tensor import CUDA0, as_device, check_index, refuse

__all__ = [
    "REFUSED",
    "DeviceProperties",
    "EmulatedEvent",
    "EmulatedStream",
    "Streams",
    "device_properties",
    "functions",
]

GiB = 1024**3

# arch -> (marketing name, memory in bytes, multiprocessors): the product each arch ships in.
_PRODUCTS: dict[str, tuple[str, int, int]] = {
    "sm_100": ("NVIDIA B200", 179 * GiB, 148),
    "sm_103": ("NVIDIA B300", 268 * GiB, 148),
    "sm_110": ("NVIDIA Jetson Thor", 122 * GiB, 20),
    "sm_120": ("NVIDIA GeForce RTX 5090", 32 * GiB, 170),
    "sm_121": ("NVIDIA GB10", 119 * GiB, 48),
}


@dataclass(frozen=True)
class DeviceProperties:
    """What ``torch.cuda.get_device_properties()`` reports for the emulated GPU."""

    name: str
    major: int
    minor: int
    total_memory: int
    multi_processor_count: int
    is_integrated: bool = False
    is_multi_gpu_board: bool = False
    warp_size: int = 32
    L2_cache_size: int = 24 * 1024**2
    uuid: str = "GPU-00000000-0000-0000-0000-000000000000"


def device_properties(arch: str) -> DeviceProperties:
    major, minor = arch_to_capability(arch)
    name, memory, sms = _PRODUCTS.get(arch, (f"NVIDIA GPU {arch}", 16 * GiB, 64))
    return DeviceProperties(
        name=f"{name} (emulated)",
        major=major,
        minor=minor,
        total_memory=memory,
        multi_processor_count=sms,
        is_integrated=arch in ("sm_110", "sm_121"),
    )


class EmulatedStream:
    """A CUDA stream of the emulated device: work runs when it is called, so every stream is
    always idle (``query()`` is True) and waits are no-ops."""

    _next_id = 1

    def __init__(self, device: Any = None, priority: int = 0, **kwargs: Any) -> None:
        if device is not None:
            check_index(as_device(device))
        self.device = CUDA0
        self.priority = priority
        self.cuda_stream = EmulatedStream._next_id
        EmulatedStream._next_id += 1
        self.stream_id = self.cuda_stream
        self.device_index = 0
        self.device_type = 1

    def query(self) -> bool:
        return True

    def synchronize(self) -> None:
        return None

    def wait_stream(self, stream: Any) -> None:
        return None

    def wait_event(self, event: Any) -> None:
        return None

    def record_event(self, event: Any = None) -> EmulatedEvent:
        event = event if event is not None else EmulatedEvent()
        event.record(self)
        return event  # type: ignore[no-any-return]

    def __enter__(self) -> EmulatedStream:
        self._context = _stream_context(self)
        self._context.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._context.__exit__(*exc)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EmulatedStream) and other.cuda_stream == self.cuda_stream

    def __hash__(self) -> int:
        return hash(("emulated-stream", self.cuda_stream))

    def __repr__(self) -> str:
        return f"<torch.cuda.Stream device=cuda:0 cuda_stream={self.cuda_stream:#x} (emulated)>"


class EmulatedEvent:
    """A CUDA event of the emulated device: ``record()`` notes the host clock."""

    def __init__(
        self, enable_timing: bool = False, blocking: bool = False, interprocess: bool = False
    ) -> None:
        if interprocess:
            raise refuse("torch.cuda.Event(interprocess=True)", "Use a plain Event.")
        self.enable_timing = enable_timing
        self._time: int | None = None

    def record(self, stream: Any = None) -> None:
        self._time = time.perf_counter_ns()

    def wait(self, stream: Any = None) -> None:
        return None

    def query(self) -> bool:
        return True

    def synchronize(self) -> None:
        return None

    def elapsed_time(self, end_event: EmulatedEvent) -> float:
        if not (self.enable_timing and end_event.enable_timing):
            raise ValueError("Both events must be created with argument 'enable_timing=True'.")
        if self._time is None or end_event._time is None:
            raise RuntimeError("Both events must be recorded before calculating elapsed time.")
        return (end_event._time - self._time) / 1e6


class Streams:
    """The default and the current stream of the installed device (the emulated device runs
    work in call order, so the current stream only matters to what programs read back)."""

    def __init__(self) -> None:
        self.default = EmulatedStream()
        self.stream = self.default


def _streams() -> Streams:
    device = state.emulated_cuda
    if device is None:
        raise refuse("A stream of an uninstalled emulated device", "Use it inside emulate().")
    return device.streams  # type: ignore[no-any-return]


@contextmanager
def _stream_context(stream: Any) -> Iterator[Any]:
    streams = _streams()
    previous = streams.stream
    if stream is not None:
        streams.stream = stream
    try:
        yield stream
    finally:
        streams.stream = previous


#: torch.cuda APIs that raise on the emulated device, with the form that works.
REFUSED: dict[str, str] = {
    "CUDAGraph": "CUDA graphs capture GPU kernels; run the callable directly.",
    "graph": "CUDA graphs capture GPU kernels; run the block directly.",
    "make_graphed_callables": "CUDA graphs capture GPU kernels; call the module directly.",
    "memory_snapshot": "Use torch.cuda.memory_allocated() (counted for the emulated device).",
    "caching_allocator_alloc": "Allocate a tensor with device='cuda' instead.",
    "caching_allocator_delete": "Let the tensor go out of scope instead.",
    "ipc_collect": "CUDA IPC is not emulated; share CPU tensors between processes.",
    "set_per_process_memory_fraction": "The emulated device has no allocator limit.",
}


def functions(controller: Any) -> dict[str, Callable[..., Any] | type]:
    """The replacements of ``torch.cuda`` attributes, bound to the installed *controller*."""
    props = controller.properties
    memory = controller.memory

    def _index(device: Any = None) -> int:
        if device is None:
            return 0
        if isinstance(device, EmulatedStream):
            return 0
        check_index(
            as_device(device) if not isinstance(device, int) else torch.device("cuda", device)
        )
        return 0

    def current_device() -> int:
        return 0

    def set_device(device: Any) -> None:
        _index(device)

    def get_device_capability(device: Any = None) -> tuple[int, int]:
        _index(device)
        return props.major, props.minor

    def get_device_name(device: Any = None) -> str:
        _index(device)
        return str(props.name)

    def get_device_properties(device: Any = None) -> DeviceProperties:
        _index(device)
        return props  # type: ignore[no-any-return]

    def synchronize(device: Any = None) -> None:
        _index(device)

    def manual_seed(seed: int) -> None:
        controller.generator.manual_seed(int(seed))

    def seed() -> None:
        controller.generator.seed()

    def initial_seed() -> int:
        return int(controller.generator.initial_seed())

    def get_rng_state(device: Any = "cuda") -> torch.Tensor:
        _index(device)
        return controller.generator.get_state()  # type: ignore[no-any-return]

    def set_rng_state(new_state: torch.Tensor, device: Any = "cuda") -> None:
        _index(device)
        controller.generator.set_state(new_state)

    def get_rng_state_all() -> list[torch.Tensor]:
        return [get_rng_state()]

    def set_rng_state_all(new_states: Any) -> None:
        for saved in new_states:
            set_rng_state(saved)

    def memory_allocated(device: Any = None) -> int:
        _index(device)
        return int(memory.allocated)

    def max_memory_allocated(device: Any = None) -> int:
        _index(device)
        return int(memory.peak)

    def reset_peak_memory_stats(device: Any = None) -> None:
        _index(device)
        memory.reset_peak()

    def mem_get_info(device: Any = None) -> tuple[int, int]:
        _index(device)
        return props.total_memory - int(memory.allocated), props.total_memory

    def memory_stats(device: Any = None) -> dict[str, int]:
        _index(device)
        return {
            "allocated_bytes.all.current": int(memory.allocated),
            "allocated_bytes.all.peak": int(memory.peak),
            "reserved_bytes.all.current": int(memory.allocated),
            "reserved_bytes.all.peak": int(memory.peak),
        }

    def nothing(*args: Any, **kwargs: Any) -> None:
        return None

    def current_stream(device: Any = None) -> EmulatedStream:
        _index(device)
        return _streams().stream

    def default_stream(device: Any = None) -> EmulatedStream:
        _index(device)
        return _streams().default

    def set_stream(stream: Any) -> None:
        if stream is not None:
            _streams().stream = stream

    class device:
        """``with torch.cuda.device(0):`` on the emulated device."""

        def __init__(self, device: Any) -> None:
            if device is not None and not (isinstance(device, int) and device < 0):
                _index(device)

        def __enter__(self) -> None:
            return None

        def __exit__(self, *exc: Any) -> None:
            return None

    def jit_fn(*args: Any, **kwargs: Any) -> Callable[..., Any]:
        def run(*call_args: Any, **call_kwargs: Any) -> Any:
            raise controller.user_jiterator_error(args[0] if args else "")

        return run

    replaced: dict[str, Any] = {
        "is_available": lambda: True,
        "device_count": lambda: 1,
        "is_initialized": lambda: True,
        "init": nothing,
        "_lazy_init": nothing,
        "current_device": current_device,
        "set_device": set_device,
        "get_device_capability": get_device_capability,
        "get_device_name": get_device_name,
        "get_device_properties": get_device_properties,
        "is_bf16_supported": lambda including_emulation=True: True,
        "synchronize": synchronize,
        "manual_seed": manual_seed,
        "manual_seed_all": manual_seed,
        "seed": seed,
        "seed_all": seed,
        "initial_seed": initial_seed,
        "get_rng_state": get_rng_state,
        "set_rng_state": set_rng_state,
        "get_rng_state_all": get_rng_state_all,
        "set_rng_state_all": set_rng_state_all,
        "empty_cache": nothing,
        "memory_allocated": memory_allocated,
        "max_memory_allocated": max_memory_allocated,
        "memory_reserved": memory_allocated,
        "max_memory_reserved": max_memory_allocated,
        "reset_peak_memory_stats": reset_peak_memory_stats,
        "reset_max_memory_allocated": reset_peak_memory_stats,
        "mem_get_info": mem_get_info,
        "memory_stats": memory_stats,
        "Stream": EmulatedStream,
        "Event": EmulatedEvent,
        "current_stream": current_stream,
        "default_stream": default_stream,
        "set_stream": set_stream,
        "stream": _stream_context,
        "device": device,
    }
    for name, instead in REFUSED.items():
        replaced[name] = _refusing(f"torch.cuda.{name}", instead)
    replaced["jiterator._create_jit_fn"] = jit_fn
    replaced["jiterator._create_multi_output_jit_fn"] = jit_fn
    return replaced


def _refusing(api: str, instead: str) -> Callable[..., Any]:
    def refused(*args: Any, **kwargs: Any) -> Any:
        raise refuse(api, instead)

    refused.__name__ = api.rsplit(".", 1)[-1]
    return refused
