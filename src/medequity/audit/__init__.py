"""Auditing an existing model's predictions for fairness (``medequity audit``)."""

from medequity.audit.core import AuditReport, TaskAudit, audit
from medequity.audit.inputs import AuditData, AuditInputError, BinRule, load_audit_data

__all__ = ["AuditData", "AuditInputError", "AuditReport", "BinRule", "TaskAudit", "audit", "load_audit_data"]
