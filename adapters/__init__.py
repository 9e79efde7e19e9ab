"""Transports: they move whole frames and nothing else."""
