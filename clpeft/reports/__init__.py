"""Reports: the results file (schema, atomic IO), aggregation over seeds, plots, Markdown/HTML."""
