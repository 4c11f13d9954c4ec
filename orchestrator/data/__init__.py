"""Datasets prepared once into the directory every service reads: preparation (`fwbench data
prepare`, and where --dataset NAME lives on disk). The format itself is
services/common/datasets.py."""
