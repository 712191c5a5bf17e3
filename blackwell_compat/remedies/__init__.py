"""Compiler remedies: give torch (NVRTC) and Triton (ptxas) a compiler that knows the GPU.

The cheapest exact rung of the remedy ladder (docs/remedies.md): nothing is rewritten, torch's
own kernels run, compiled by a compiler that lists the GPU's architecture.
"""
