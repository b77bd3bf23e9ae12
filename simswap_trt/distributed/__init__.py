"""Batch jobs over a Ray cluster with Ray Data (``pip install 'simswap-trt[ray]'``). Importing this package
does not import Ray; ``run_job`` does."""

from simswap_trt.distributed.batch import (
    INPUT_SUFFIXES,
    STATUSES,
    VIDEO_SUFFIXES,
    ItemReport,
    JobOptions,
    check_outputs,
    list_inputs,
    output_for,
    run_job,
)

__all__ = [
    "INPUT_SUFFIXES",
    "STATUSES",
    "VIDEO_SUFFIXES",
    "ItemReport",
    "JobOptions",
    "check_outputs",
    "list_inputs",
    "output_for",
    "run_job",
]
