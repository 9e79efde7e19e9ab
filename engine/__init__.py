"""The service around the kernels: buffers, drivers, config, control plane, CLI."""
