"""Reports: claim records, badges, markdown tables and plots."""
