"""One module per figure of the suite; each takes the run (:class:`bench.context.Bench`)."""
