"""Batch mode: a Kaggle-style folder through the streaming workers into submission.csv."""

from .job import BatchJob, BatchStalled, BatchSummary, scan_folder
from .submission import write_submission

__all__ = ["BatchJob", "BatchStalled", "BatchSummary", "scan_folder", "write_submission"]
