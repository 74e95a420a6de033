"""Zero-shot multiple-choice reasoning tasks, scored the way lm-evaluation-harness scores them."""

from qmc_edge.tasks.data import TASKS, MCItem, load_task
from qmc_edge.tasks.scoring import score_items, task_metrics

__all__ = ["TASKS", "MCItem", "load_task", "score_items", "task_metrics"]
