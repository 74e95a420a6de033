"""Zero-shot multiple-choice reasoning tasks, scored the way lm-evaluation-harness scores them.

May import only the package root (it scores any torch causal LM, quantized or not).
"""

from qmc_edge.tasks.data import TASKS, MCItem, load_task
from qmc_edge.tasks.scoring import score_items, task_metrics

__all__ = ["TASKS", "MCItem", "load_task", "score_items", "task_metrics"]
