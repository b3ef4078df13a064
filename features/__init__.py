"""Feature pipelines: CRM exports -> canonical tables -> point-in-time feature matrices."""
