"""audiomill: turn large audio corpora into training-ready discrete tokens."""

import os

# torch's CPU allocator backs tensors of 2 MB and more with transparent huge pages when this is set
# before torch is imported (it reads it once). A CPU model's activations are freed and allocated again
# every call: in 4 KB pages, the kernel's page faults and zeroing cost as much time as the model
# (real-size SNAC 24 kHz on 2 cores: 3.0x real time, 35 s of system time; with this and the heap
# settings of stages.batched.HeapTrimmer, 5.7-6.8x real time, 5-6 s; BENCHMARKS.md). Set it to 0 to opt out.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

__version__ = "0.1.0"
