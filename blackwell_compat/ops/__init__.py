"""The ops layer: which ATen ops the Jiterator compiles, and the dispatcher kernel that serves them.

- :mod:`.inventory`: the table of Jiterator-bound ops and dtypes per torch release (data);
- :mod:`.rules`: how a call's arguments select the dtype of the kernel (decision rules);
- :mod:`.spec`: what the kernel knows about an overload, and the record of a call;
- :mod:`.discovery`: the overloads of the installed torch the kernel is registered for;
- :mod:`.rewrites`: the Jiterator-free implementations (exact rewrites, CPU round trip);
- :mod:`.originals`: the captured original kernels (and PyTorch's wrapped numbers);
- :mod:`.kernel`: the kernel itself, deciding call by call;
- :mod:`.dispatcher`: its registration, shared by the op guard and emulation.

The layer sits above targeting (:mod:`blackwell_compat.devices`) and below the emulation, which
it never imports: the emulation registers its error with :func:`.kernel.set_emulated_failure`.
Nothing here imports torch at module level.
"""
