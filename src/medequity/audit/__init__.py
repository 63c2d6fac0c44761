"""Auditing an existing model's predictions for fairness (``medequity audit``)."""

from medequity.audit.core import AuditReport, TaskAudit, audit
from medequity.audit.inputs import AuditData, AuditInputError, BinRule, load_audit_data
from medequity.audit.segmentation import SegmentationAuditReport, SegmentationCase, audit_segmentation, segmentation_example_table

__all__ = ["AuditData", "AuditInputError", "AuditReport", "BinRule", "SegmentationAuditReport", "SegmentationCase", "TaskAudit",
           "audit", "audit_segmentation", "load_audit_data", "segmentation_example_table"]
