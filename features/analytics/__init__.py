"""Pipeline analytics: pure functions over canonical tables at an as-of date.

`pipeline_metrics` returns every metric (funnel, time in stage, cycle, deal size,
bottleneck, velocity and its trend, the change waterfall, stalled deals, cohorts,
coverage) as plain JSON, with a `definitions` entry saying which win rate each figure
shows (`features.winrates`); `metrics_table` flattens it into the long CSV table.
"""
from features.analytics.export import metrics_table
from features.analytics.metrics import group_columns, pipeline_metrics
from features.analytics.state import PipelineState, build_state

__all__ = ["metrics_table", "pipeline_metrics", "group_columns", "build_state", "PipelineState"]
