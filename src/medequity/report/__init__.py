"""Reports: plots (matplotlib), tables and self-contained HTML pages."""
