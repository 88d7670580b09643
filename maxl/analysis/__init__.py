"""Looking at runs: loading run folders, agreement with human labels, plots, tables, reports."""
