"""What a person typed or wrote down, turned into TrainSpecs: options (the command-line options
that make a spec, and the one function from option values to a spec), suite_file (a suite YAML
file, read and validated)."""
