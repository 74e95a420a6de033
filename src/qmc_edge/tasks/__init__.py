"""Zero-shot multiple-choice reasoning tasks, scored the way lm-evaluation-harness scores them."""

from .data import TASKS, MCItem, load_task
from .scoring import score_items, task_metrics

__all__ = ["TASKS", "MCItem", "load_task", "score_items", "task_metrics"]
