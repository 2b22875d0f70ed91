"""What vit_jax runs on: devices, meshes and processes, host memory and logs.

sharding.py       the device mesh and the one rules table (logical axes -> mesh axes)
sharding_view.py  what a tree of sharded arrays holds on each device
cpu_devices.py    one XLA device per CPU core, where JAX computes on the host (`prepare`)
xla_cpu_flags.py  XLA:CPU backend flags chosen for the dtype and the CPU
host_memory.py    glibc kept from unmapping XLA:CPU's per-step buffers (opt-in)
runtime.py        which accelerator, and whether the released checkpoints are reachable
quiet_logs.py     library logs silenced where we report the failure ourselves
"""
