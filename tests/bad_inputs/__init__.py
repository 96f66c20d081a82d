"""The catalogue of bad inputs and faults: one file per surface a user feeds in (specs,
checkpoints, probes, prompt files, options, the cache, reports, the command line, the claims
suite, the claims' criteria), each case named ``<what it feeds in>--<what it must get back>``.
The shared bench is :mod:`bad_inputs.bench`."""
