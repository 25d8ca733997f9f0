"""The click layer: one module per command group, each only parsing options and calling the
stage function of the same name in `lf_wrap`."""
