"""Tables beside the paper's numbers, the report's pages and plots, the compute plan and the provenance of a table."""
